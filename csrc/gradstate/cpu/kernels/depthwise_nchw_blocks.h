// Depthwise NCHW layers that the NHWC kernels serve better than the NCHW ones (the weight gradient, and the
// forward pass and dx at strides above 1 or with short rows) run them on NHWC copies of one image's block of
// channels at a time, about 256 KiB where the channels allow, so that the copies stay in the L2 cache. Whole
// images copied into NHWC order went through memory: the kernel read x (or dy) three times and wrote it twice
// instead of reading it once.
#pragma once

#include <cstdint>

#include "gradstate/core/params.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// About how many floats a task copies, where blocks of the fewest vectors allowed are that small: 256 KiB,
// half the L2 cache of the machines measured (8x256x28x28 dW at stride 2: the same time with 128 KiB, 1.6x as
// long with 512).
constexpr std::int64_t nchw_block_floats = 64 * 1024;
// Tasks a layer is split into, where blocks allow: enough for the threads to share. They depend on the layer
// only, never on the thread count.
constexpr std::int64_t nchw_block_tasks = 16;
// Tasks below which the blocks do not apply: the kernel inside a task runs on that task's thread alone, so
// with fewer tasks than threads some would idle, and whole copies, whose kernel spreads its own tasks over
// the threads, serve better (a batch of one image of 16 channels would take a single thread).
constexpr std::int64_t nchw_least_block_tasks = 8;
// The most floats a block may hold, where blocks of the fewest vectors allowed are larger than
// nchw_block_floats: 2 MiB, so that the scratch a thread keeps stays bounded on large planes (other paths
// take those: whole copies of at most 8 MiB, or the planes in place). Blocks of 16 channels of 112x112
// planes, 1.6 MiB, still ran faster than either (8x64x112x112 dW 3.4 -> 2.8 ms on 2 threads).
constexpr std::int64_t nchw_max_block_floats = 8 * nchw_block_floats;
// The copies' scratch slot, apart from the kernels' (see thread_scratch).
constexpr int nchw_copies_slot = 1;

// Channels [first, first + count) of image n of a layer of `channels` channels, as the depthwise layer
// `params` of a batch of one NHWC image.
struct NchwBlock {
  std::int64_t n, first, count, channels;
  ConvParams params;
};

// Blocks per image of the depthwise NCHW layer p whose tasks hold floats_per_channel floats for each of their
// channels and need min_vectors whole vectors of channels (but for layers with fewer).
inline std::int64_t nchw_blocks_per_image(const ConvParams& p, std::int64_t floats_per_channel,
                                          std::int64_t min_vectors) {
  const std::int64_t channels = p.out_c;
  const std::int64_t wanted = max_of(ceil_div(channels * floats_per_channel, nchw_block_floats),
                                     ceil_div(nchw_block_tasks, std::int64_t{p.batch}));
  return max_of<std::int64_t>(1, min_of(channels / lanes / min_vectors, wanted));
}

// The first channel of block b of `blocks` over `vectors` whole vectors of channels: the blocks share the
// vectors as evenly as whole vectors allow, the last taking the most and the channels past the last vector.
inline std::int64_t nchw_block_first(std::int64_t b, std::int64_t blocks, std::int64_t vectors) {
  return b * vectors / blocks * lanes;
}

// Whether the blocks make enough tasks (nchw_least_block_tasks) and the largest, the last, holds at most
// nchw_max_block_floats.
inline bool nchw_blocks_apply(const ConvParams& p, std::int64_t floats_per_channel,
                              std::int64_t min_vectors) {
  const std::int64_t channels = p.out_c, blocks = nchw_blocks_per_image(p, floats_per_channel, min_vectors);
  const std::int64_t last = channels - nchw_block_first(blocks - 1, blocks, channels / lanes);
  return p.batch * blocks >= nchw_least_block_tasks && last * floats_per_channel <= nchw_max_block_floats;
}

// Calls task(block, scratch) for each image and block of channels of the depthwise NCHW layer p, a task each,
// with floats_per_channel floats of the calling thread's scratch for each of the block's channels. Blocks
// hold whole vectors of channels, at least min_vectors of them where the layer has that many (the last
// block also takes the channels past the last whole vector).
template <typename Task>
void for_each_nchw_block(const ConvParams& p, std::int64_t floats_per_channel, std::int64_t min_vectors,
                         Task&& task) {
  const std::int64_t channels = p.out_c, vectors = channels / lanes;
  const std::int64_t blocks = nchw_blocks_per_image(p, floats_per_channel, min_vectors);
  parallel_for(p.batch * blocks, [&](std::int64_t t) {
    const std::int64_t b = t % blocks, first = nchw_block_first(b, blocks, vectors);
    const std::int64_t end = b + 1 == blocks ? channels : nchw_block_first(b + 1, blocks, vectors);
    NchwBlock block{t / blocks, first, end - first, channels, p};
    block.params.layout = Layout::NHWC, block.params.batch = 1;
    block.params.in_c = block.params.out_c = block.params.groups = static_cast<std::int32_t>(block.count);
    task(block, static_cast<float*>(
                    thread_scratch(sizeof(float) * block.count * floats_per_channel, nchw_copies_slot)));
  });
}

// The block's channels of image block.n of the NCHW tensor `tensor` (planes of `plane` pixels) into `copy`,
// pixel after pixel.
inline void copy_block_to_nhwc(const NchwBlock& block, const float* tensor, std::int64_t plane, float* copy) {
  transpose(tensor + (block.n * block.channels + block.first) * plane, block.count, plane, plane, copy,
            block.count);
}

// The inverse: `copy`, pixel after pixel, into the block's channels of image block.n of `tensor`.
inline void copy_block_to_nchw(const NchwBlock& block, const float* copy, std::int64_t plane, float* tensor) {
  transpose(copy, plane, block.count, block.count, tensor + (block.n * block.channels + block.first) * plane,
            plane);
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
