// OpenSSL 3 (Debian's libssl-dev) for Courier's DTLS 1.2 handler, and the few things Swift cannot
// call directly: function-like macros (SSL_OP_* bits, DTLS timers, MTU), a BIO that carries one
// datagram per read and per write, the stateless cookie, and PSK callbacks that read what the
// Swift side set on each SSL beforehand (so OpenSSL never calls back into Swift).
#ifndef COURIER_CDTLS_H
#define COURIER_CDTLS_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

// MARK: - Macros as functions

uint64_t cdtls_default_server_options(void);
uint64_t cdtls_default_client_options(void);
int cdtls_ctx_set_dtls12_only(SSL_CTX *ctx);
int cdtls_ctx_set1_groups_list(SSL_CTX *ctx, const char *groups);
int cdtls_ctx_set1_sigalgs_list(SSL_CTX *ctx, const char *sigalgs);
long cdtls_set_mtu(SSL *ssl, long mtu);
/// Microseconds until the DTLS retransmission timer is due; -1 when no timer runs.
int64_t cdtls_timeout_microseconds(SSL *ssl);
/// DTLSv1_handle_timeout: >0 retransmitted, 0 nothing due, <0 too many retransmissions.
int cdtls_handle_timeout(SSL *ssl);
int cdtls_set_tlsext_host_name(SSL *ssl, const char *name);

// MARK: - The datagram BIO

/// Outbound datagrams a BIO holds until the caller takes them; a write beyond is dropped, as
/// the network would drop it (DTLS retransmits a flight it does not see answered).
#define CDTLS_MAX_QUEUED_DATAGRAMS 32

/// A BIO that reads the one datagram staged by the caller, and queues each write as one
/// datagram. The peer's address bytes are kept for the cookie.
BIO *cdtls_datagram_bio_new(void);
/// The next read returns these bytes (not copied: valid until `cdtls_datagram_bio_unstage`).
void cdtls_datagram_bio_stage(BIO *bio, const uint8_t *bytes, size_t count);
void cdtls_datagram_bio_unstage(BIO *bio);
/// The peer's address bytes (at most 32; more is refused and the cookie then fails), the
/// input of its cookie.
void cdtls_datagram_bio_set_peer(BIO *bio, const uint8_t *bytes, size_t count);
/// Length of the next queued outbound datagram, or -1 when none.
int cdtls_datagram_bio_next_length(BIO *bio);
/// Copies the next queued datagram into `out` (at least its length) and removes it.
int cdtls_datagram_bio_pop(BIO *bio, uint8_t *out, size_t capacity);

// MARK: - Stateless cookies (RFC 6347 4.2.1)

/// Cookie length: HMAC-SHA256 of the peer's address, cut to 16 bytes.
#define CDTLS_COOKIE_LENGTH 16
/// Installs the cookie callbacks (generate, verify) on a server context.
void cdtls_ctx_install_cookies(SSL_CTX *ctx);
/// A new secret (32 random bytes); the previous one still verifies, so a cookie issued just
/// before a rotation is not refused.
int cdtls_rotate_cookie_secret(void);
/// Rotates the secret when it is at least `seconds` old (any thread may ask; one rotates).
int cdtls_rotate_cookie_secret_if_older(int seconds);

// MARK: - Pre-shared keys

/// Installs the PSK callbacks on a server context: the key is the one set on the SSL for the
/// identity the client names (`cdtls_set_server_psk`); any other identity is unknown.
void cdtls_ctx_install_server_psk(SSL_CTX *ctx);
/// Installs the PSK callback on a client context: it offers what `cdtls_set_client_psk` set.
void cdtls_ctx_install_client_psk(SSL_CTX *ctx);
/// The identity and key this SSL accepts (server) or offers (client); copied. Identity at
/// most 128 bytes, key at most 64.
int cdtls_set_server_psk(SSL *ssl, const char *identity, const uint8_t *key, size_t key_length);
int cdtls_set_client_psk(SSL *ssl, const char *identity, const uint8_t *key, size_t key_length);

// MARK: - Certificates

/// The subject's common name of the verified peer certificate into `out` (NUL-terminated);
/// its length, or -1 when there is no verified certificate.
int cdtls_peer_common_name(SSL *ssl, char *out, size_t capacity);
/// The error queue's oldest error as text, cleared; empty when none.
void cdtls_last_error(char *out, size_t capacity);

#endif
