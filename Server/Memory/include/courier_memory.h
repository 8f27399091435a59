#ifndef COURIER_MEMORY_H
#define COURIER_MEMORY_H

/// Hands the heap's free memory back to the system (glibc's malloc_trim; nothing elsewhere).
/// Not in Swift's Glibc module, which leaves out <malloc.h>.
void courier_release_free_memory(void);

#endif
