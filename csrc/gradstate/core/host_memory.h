// Host memory blocks for buffers and for the kernels' memory of one call, from a bounded cache of freed
// blocks.
//
// A training loop asks for the same sizes every step: the same outputs, the same packed panels and partial
// sums. Reusing freed blocks saves the operating system's page faults and zeroing, which for large blocks
// cost more than the kernels' work in them (the Winograd weight gradient's 8 MiB of transforms took 4 ms of
// page faults against 7 ms of arithmetic on 2 threads).
#pragma once

#include <cstddef>

namespace gradstate {

// A block of at least `nbytes` (at least one byte), aligned to 64 bytes (to 2 MiB and offered as huge pages
// when large), its contents undefined; std::bad_alloc when it cannot be had. Its size for free_host_block is
// host_block_bytes(nbytes).
void* allocate_host_block(std::size_t nbytes);
std::size_t host_block_bytes(std::size_t nbytes);
// Gives the block back: kept for reuse, or freed.
void free_host_block(void* data, std::size_t bytes);

// The bytes of freed blocks kept for reuse, and returning them to the operating system.
std::size_t cached_host_bytes();
void release_cached_host_blocks();

}  // namespace gradstate
