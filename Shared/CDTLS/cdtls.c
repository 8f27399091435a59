#include "CDTLS.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// MARK: - Macros as functions

uint64_t cdtls_default_server_options(void) {
    // NO_QUERY_MTU: the BIO knows no MTU; SSL_set_mtu gives it, and DTLSv1_listen's SSL_clear
    // keeps it only with this option. COOKIE_EXCHANGE: HelloVerifyRequest before any state.
    return SSL_OP_NO_QUERY_MTU | SSL_OP_COOKIE_EXCHANGE | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET;
}

uint64_t cdtls_default_client_options(void) {
    return SSL_OP_NO_QUERY_MTU | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET;
}

int cdtls_ctx_set_dtls12_only(SSL_CTX *ctx) {
    return SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) && SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
}

int cdtls_ctx_set1_groups_list(SSL_CTX *ctx, const char *groups) { return (int)SSL_CTX_set1_groups_list(ctx, groups); }
int cdtls_ctx_set1_sigalgs_list(SSL_CTX *ctx, const char *sigalgs) { return (int)SSL_CTX_set1_sigalgs_list(ctx, sigalgs); }
long cdtls_set_mtu(SSL *ssl, long mtu) { return SSL_set_mtu(ssl, mtu); }

int64_t cdtls_timeout_microseconds(SSL *ssl) {
    struct timeval left;
    if (DTLSv1_get_timeout(ssl, &left) != 1) return -1;
    return (int64_t)left.tv_sec * 1000000 + left.tv_usec;
}

int cdtls_handle_timeout(SSL *ssl) { return (int)DTLSv1_handle_timeout(ssl); }
int cdtls_set_tlsext_host_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

// MARK: - The datagram BIO

typedef struct {
    uint8_t *bytes;
    size_t count;
} cdtls_datagram;

typedef struct {
    const uint8_t *staged;
    size_t staged_count;
    uint8_t peer[32];
    size_t peer_count;
    cdtls_datagram queue[CDTLS_MAX_QUEUED_DATAGRAMS];
    size_t head;
    size_t queued;
} cdtls_bio_data;

static int datagram_write(BIO *bio, const char *in, int count) {
    cdtls_bio_data *data = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (data == NULL || in == NULL || count < 0) return -1;
    if (data->queued == CDTLS_MAX_QUEUED_DATAGRAMS) return count;
    uint8_t *copy = malloc(count > 0 ? (size_t)count : 1);
    if (copy == NULL) return -1;
    memcpy(copy, in, (size_t)count);
    size_t slot = (data->head + data->queued) % CDTLS_MAX_QUEUED_DATAGRAMS;
    data->queue[slot].bytes = copy;
    data->queue[slot].count = (size_t)count;
    data->queued += 1;
    return count;
}

static int datagram_read(BIO *bio, char *out, int capacity) {
    cdtls_bio_data *data = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (data == NULL || out == NULL || capacity < 0) return -1;
    if (data->staged == NULL) {
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t count = data->staged_count < (size_t)capacity ? data->staged_count : (size_t)capacity;
    memcpy(out, data->staged, count);
    data->staged = NULL;
    data->staged_count = 0;
    return (int)count;
}

static int datagram_puts(BIO *bio, const char *text) { return datagram_write(bio, text, (int)strlen(text)); }

static long datagram_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)pointer;
    switch (command) {
    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DUP:
    case BIO_CTRL_DGRAM_SET_CONNECTED:
    case BIO_CTRL_DGRAM_MTU_DISCOVER:
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT:
        return 1;
    case BIO_CTRL_GET_CLOSE:
        return BIO_get_shutdown(bio);
    case BIO_CTRL_SET_CLOSE:
        BIO_set_shutdown(bio, (int)number);
        return 1;
    case BIO_CTRL_WPENDING:
    case BIO_CTRL_PENDING:
        return 0;
    default:
        // Includes the MTU queries: 0, never -1 (OpenSSL keeps the MTU in a size_t).
        return 0;
    }
}

static int datagram_create(BIO *bio) {
    cdtls_bio_data *data = calloc(1, sizeof(cdtls_bio_data));
    if (data == NULL) return 0;
    BIO_set_data(bio, data);
    BIO_set_init(bio, 1);
    return 1;
}

static int datagram_destroy(BIO *bio) {
    cdtls_bio_data *data = BIO_get_data(bio);
    if (data != NULL) {
        for (size_t i = 0; i < data->queued; i++) free(data->queue[(data->head + i) % CDTLS_MAX_QUEUED_DATAGRAMS].bytes);
        free(data);
    }
    BIO_set_data(bio, NULL);
    BIO_set_init(bio, 0);
    return 1;
}

static BIO_METHOD *datagram_method = NULL;
static pthread_once_t datagram_method_once = PTHREAD_ONCE_INIT;

static void make_datagram_method(void) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "courier-datagram");
    if (method == NULL) return;
    BIO_meth_set_write(method, datagram_write);
    BIO_meth_set_read(method, datagram_read);
    BIO_meth_set_puts(method, datagram_puts);
    BIO_meth_set_ctrl(method, datagram_ctrl);
    BIO_meth_set_create(method, datagram_create);
    BIO_meth_set_destroy(method, datagram_destroy);
    datagram_method = method;
}

BIO *cdtls_datagram_bio_new(void) {
    pthread_once(&datagram_method_once, make_datagram_method);
    return datagram_method == NULL ? NULL : BIO_new(datagram_method);
}

void cdtls_datagram_bio_stage(BIO *bio, const uint8_t *bytes, size_t count) {
    cdtls_bio_data *data = BIO_get_data(bio);
    if (data == NULL) return;
    data->staged = bytes;
    data->staged_count = count;
}

void cdtls_datagram_bio_unstage(BIO *bio) { cdtls_datagram_bio_stage(bio, NULL, 0); }

void cdtls_datagram_bio_set_peer(BIO *bio, const uint8_t *bytes, size_t count) {
    cdtls_bio_data *data = BIO_get_data(bio);
    if (data == NULL) return;
    // Never a prefix of the address: a cookie must not cover neighbouring addresses.
    data->peer_count = count <= sizeof(data->peer) ? count : 0;
    memcpy(data->peer, bytes, data->peer_count);
}

int cdtls_datagram_bio_next_length(BIO *bio) {
    cdtls_bio_data *data = BIO_get_data(bio);
    if (data == NULL || data->queued == 0) return -1;
    return (int)data->queue[data->head].count;
}

int cdtls_datagram_bio_pop(BIO *bio, uint8_t *out, size_t capacity) {
    cdtls_bio_data *data = BIO_get_data(bio);
    if (data == NULL || data->queued == 0) return -1;
    cdtls_datagram next = data->queue[data->head];
    data->head = (data->head + 1) % CDTLS_MAX_QUEUED_DATAGRAMS;
    data->queued -= 1;
    size_t count = next.count < capacity ? next.count : capacity;
    memcpy(out, next.bytes, count);
    free(next.bytes);
    return (int)count;
}

// MARK: - Stateless cookies

static pthread_mutex_t cookie_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t cookie_secrets[2][32];
static int cookie_secrets_ready = 0;

static struct timespec cookie_secret_made;

int cdtls_rotate_cookie_secret_if_older(int seconds) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&cookie_lock);
    int due = !cookie_secrets_ready || now.tv_sec - cookie_secret_made.tv_sec >= seconds;
    pthread_mutex_unlock(&cookie_lock);
    return due ? cdtls_rotate_cookie_secret() : 1;
}

int cdtls_rotate_cookie_secret(void) {
    uint8_t fresh[32];
    if (RAND_bytes(fresh, sizeof(fresh)) != 1) return 0;
    pthread_mutex_lock(&cookie_lock);
    clock_gettime(CLOCK_MONOTONIC, &cookie_secret_made);
    if (cookie_secrets_ready) {
        memcpy(cookie_secrets[1], cookie_secrets[0], 32);
    } else {
        memcpy(cookie_secrets[1], fresh, 32);
    }
    memcpy(cookie_secrets[0], fresh, 32);
    cookie_secrets_ready = 1;
    pthread_mutex_unlock(&cookie_lock);
    return 1;
}

static int cookie_for(SSL *ssl, int which, uint8_t out[CDTLS_COOKIE_LENGTH]) {
    cdtls_bio_data *data = BIO_get_data(SSL_get_rbio(ssl));
    if (data == NULL || data->peer_count == 0) return 0;
    uint8_t secret[32];
    pthread_mutex_lock(&cookie_lock);
    int ready = cookie_secrets_ready;
    memcpy(secret, cookie_secrets[which], 32);
    pthread_mutex_unlock(&cookie_lock);
    if (!ready) return 0;
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int digest_length = 0;
    if (HMAC(EVP_sha256(), secret, sizeof(secret), data->peer, data->peer_count, digest, &digest_length) == NULL) return 0;
    memcpy(out, digest, CDTLS_COOKIE_LENGTH);
    return 1;
}

static int generate_cookie(SSL *ssl, unsigned char *cookie, unsigned int *length) {
    uint8_t value[CDTLS_COOKIE_LENGTH];
    if (!cookie_for(ssl, 0, value)) return 0;
    memcpy(cookie, value, CDTLS_COOKIE_LENGTH);
    *length = CDTLS_COOKIE_LENGTH;
    return 1;
}

static int verify_cookie(SSL *ssl, const unsigned char *cookie, unsigned int length) {
    if (length != CDTLS_COOKIE_LENGTH) return 0;
    for (int which = 0; which < 2; which++) {
        uint8_t expected[CDTLS_COOKIE_LENGTH];
        if (cookie_for(ssl, which, expected) && CRYPTO_memcmp(expected, cookie, CDTLS_COOKIE_LENGTH) == 0) return 1;
    }
    return 0;
}

void cdtls_ctx_install_cookies(SSL_CTX *ctx) {
    pthread_mutex_lock(&cookie_lock);
    int ready = cookie_secrets_ready;
    pthread_mutex_unlock(&cookie_lock);
    if (!ready) cdtls_rotate_cookie_secret();
    SSL_CTX_set_cookie_generate_cb(ctx, generate_cookie);
    SSL_CTX_set_cookie_verify_cb(ctx, verify_cookie);
}

// MARK: - Pre-shared keys

typedef struct {
    char identity[129];
    uint8_t key[64];
    size_t key_length;
} cdtls_psk;

static int psk_index = -1;
static pthread_once_t psk_index_once = PTHREAD_ONCE_INIT;

static void free_psk(void *parent, void *pointer, CRYPTO_EX_DATA *ex_data, int index, long argl, void *argp) {
    (void)parent; (void)ex_data; (void)index; (void)argl; (void)argp;
    if (pointer != NULL) {
        OPENSSL_cleanse(pointer, sizeof(cdtls_psk));
        free(pointer);
    }
}

static void make_psk_index(void) { psk_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_psk); }

static cdtls_psk *psk_of(SSL *ssl, int create) {
    pthread_once(&psk_index_once, make_psk_index);
    if (psk_index < 0) return NULL;
    cdtls_psk *psk = SSL_get_ex_data(ssl, psk_index);
    if (psk == NULL && create) {
        psk = calloc(1, sizeof(cdtls_psk));
        if (psk == NULL || !SSL_set_ex_data(ssl, psk_index, psk)) {
            free(psk);
            return NULL;
        }
    }
    return psk;
}

static int set_psk(SSL *ssl, const char *identity, const uint8_t *key, size_t key_length) {
    size_t identity_length = strlen(identity);
    if (identity_length > 128 || key_length > 64) return 0;
    cdtls_psk *psk = psk_of(ssl, 1);
    if (psk == NULL) return 0;
    memcpy(psk->identity, identity, identity_length + 1);
    memcpy(psk->key, key, key_length);
    psk->key_length = key_length;
    return 1;
}

int cdtls_set_server_psk(SSL *ssl, const char *identity, const uint8_t *key, size_t key_length) { return set_psk(ssl, identity, key, key_length); }
int cdtls_set_client_psk(SSL *ssl, const char *identity, const uint8_t *key, size_t key_length) { return set_psk(ssl, identity, key, key_length); }

static unsigned int server_psk(SSL *ssl, const char *identity, unsigned char *key, unsigned int max_key_length) {
    cdtls_psk *psk = psk_of(ssl, 0);
    // 0 makes OpenSSL answer with a fatal unknown_psk_identity alert.
    if (psk == NULL || identity == NULL || psk->key_length == 0 || strcmp(identity, psk->identity) != 0 || psk->key_length > max_key_length) return 0;
    memcpy(key, psk->key, psk->key_length);
    return (unsigned int)psk->key_length;
}

static unsigned int client_psk(SSL *ssl, const char *hint, char *identity, unsigned int max_identity_length, unsigned char *key, unsigned int max_key_length) {
    (void)hint;
    cdtls_psk *psk = psk_of(ssl, 0);
    if (psk == NULL || psk->key_length == 0) return 0;
    size_t identity_length = strlen(psk->identity);
    if (identity_length + 1 > max_identity_length || psk->key_length > max_key_length) return 0;
    memcpy(identity, psk->identity, identity_length + 1);
    memcpy(key, psk->key, psk->key_length);
    return (unsigned int)psk->key_length;
}

void cdtls_ctx_install_server_psk(SSL_CTX *ctx) { SSL_CTX_set_psk_server_callback(ctx, server_psk); }
void cdtls_ctx_install_client_psk(SSL_CTX *ctx) { SSL_CTX_set_psk_client_callback(ctx, client_psk); }

// MARK: - Certificates

int cdtls_peer_common_name(SSL *ssl, char *out, size_t capacity) {
    if (capacity == 0) return -1;
    out[0] = 0;
    X509 *certificate = SSL_get0_peer_certificate(ssl);
    if (certificate == NULL || SSL_get_verify_result(ssl) != X509_V_OK) return -1;
    X509_NAME *subject = X509_get_subject_name(certificate);
    if (subject == NULL) return -1;
    int length = X509_NAME_get_text_by_NID(subject, NID_commonName, out, (int)capacity);
    return length < 0 ? -1 : length;
}

void cdtls_last_error(char *out, size_t capacity) {
    if (capacity == 0) return;
    out[0] = 0;
    unsigned long error = ERR_get_error();
    if (error != 0) ERR_error_string_n(error, out, capacity);
    ERR_clear_error();
}
