// The Metal kernels' source text, embedded at build time (generated from kernels/*.metal with the shared
// parameter header inlined), for machines whose build had no offline Metal compiler.
#pragma once

namespace gradstate::metal {

const char* embedded_kernel_source();

}  // namespace gradstate::metal
