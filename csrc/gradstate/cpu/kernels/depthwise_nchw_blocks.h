// Depthwise NCHW layers that the NHWC kernels serve better than the NCHW ones (strides above 1, short rows)
// run them on NHWC copies of one image's block of channels at a time, small enough for the L2 cache. Whole
// images copied into NHWC order went through memory: the kernel read x (or dy) three times and wrote it
// twice instead of reading it once.
#pragma once

#include <cstdint>

#include "gradstate/core/params.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// About how many floats a task copies, where blocks of 2 vectors of channels are that small: 256 KiB, half
// the L2 cache of the machines measured (8x256x28x28 dW at stride 2: the same time with 128 KiB, 1.6x as
// long with 512).
constexpr std::int64_t nchw_block_floats = 64 * 1024;
// Tasks a layer is split into at least, where blocks of 2 vectors of channels allow: enough for the threads
// to share. They depend on the layer only, never on the thread count.
constexpr std::int64_t nchw_block_tasks = 16;
// The copies' scratch slot, apart from the kernels' (see thread_scratch).
constexpr int nchw_copies_slot = 1;

// Channels [first, first + count) of image n of a layer of `channels` channels, as the depthwise layer
// `params` of a batch of one NHWC image.
struct NchwBlock {
  std::int64_t n, first, count, channels;
  ConvParams params;
};

// Calls task(block, scratch) for each image and block of channels of the depthwise NCHW layer p, a task each,
// with floats_per_channel floats of the calling thread's scratch for each of the block's channels. Blocks
// hold whole vectors of channels, at least 2 of them where the layer has that many (the last block also
// takes the channels past the last whole vector).
template <typename Task>
void for_each_nchw_block(const ConvParams& p, std::int64_t floats_per_channel, Task&& task) {
  const std::int64_t channels = p.out_c, vectors = channels / lanes;
  const std::int64_t wanted = max_of(ceil_div(channels * floats_per_channel, nchw_block_floats),
                                     ceil_div(nchw_block_tasks, std::int64_t{p.batch}));
  const std::int64_t blocks = max_of<std::int64_t>(1, min_of(vectors / 2, wanted));
  parallel_for(p.batch * blocks, [&](std::int64_t t) {
    const std::int64_t b = t % blocks, first = b * vectors / blocks * lanes;
    const std::int64_t end = b + 1 == blocks ? channels : (b + 1) * vectors / blocks * lanes;
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
