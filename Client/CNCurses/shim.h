#ifndef COURIER_CNCURSES_SHIM_H
#define COURIER_CNCURSES_SHIM_H

// The wide-character ncurses (UTF-8 and emoji); Debian's libncurses-dev.
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif
#define _XOPEN_SOURCE_EXTENDED 1
#define NCURSES_WIDECHAR 1
#include <locale.h>
#include <wchar.h>
#include <ncursesw/curses.h>

// What Swift cannot import from curses.h: the global windows and attributes are macros or
// mutable globals, so they are reached through these.
static inline WINDOW *courier_stdscr(void) { return stdscr; }
static inline int courier_lines(void) { return getmaxy(stdscr); }
static inline int courier_cols(void) { return getmaxx(stdscr); }
static inline attr_t courier_bold(void) { return A_BOLD; }
static inline attr_t courier_reverse(void) { return A_REVERSE; }
static inline attr_t courier_dim(void) { return A_DIM; }
static inline attr_t courier_color_pair(short pair) { return COLOR_PAIR(pair); }
static inline mmask_t courier_wheel_up(void) { return BUTTON4_PRESSED; }
#ifdef BUTTON5_PRESSED
static inline mmask_t courier_wheel_down(void) { return BUTTON5_PRESSED; }
#else
static inline mmask_t courier_wheel_down(void) { return 0; }
#endif
static inline int courier_key_code_yes(void) { return KEY_CODE_YES; }
static inline void courier_set_locale(void) { setlocale(LC_ALL, ""); }
// Columns a character takes on the terminal (-1: not printable).
static inline int courier_wcwidth(unsigned int scalar) { return wcwidth((wchar_t)scalar); }

#endif
