#include "CFuzzerDriver.h"

#include <stdlib.h>

// -sanitize=fuzzer links libFuzzer with its own main, which a debug build's link can pull in
// beside the program's (SwiftPM defines main as an alias of the executable's entry point). That
// main refers to this symbol; it is never called, because the program's main is the one that runs
// and it hands libFuzzer its callback through LLVMFuzzerRunDriver.
__attribute__((weak)) int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)data;
    (void)size;
    abort();
}
