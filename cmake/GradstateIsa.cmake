# Per-ISA kernels: every source under csrc/gradstate/cpu/kernels is compiled once per instruction-set level
# of the target architecture, with that level's flags and its own namespace, and dispatch.cpp picks one
# level at run time from the CPU's features. No flag reaches any other file, and there is no global -march,
# so one binary runs on every CPU of its architecture.

# The levels of the target architecture, baseline first.
function(gradstate_isa_levels out)
  string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" processor)
  if(processor MATCHES "^(x86_64|amd64)$")
    set(${out} scalar x86_v3 x86_v4 PARENT_SCOPE)
  elseif(processor MATCHES "^(aarch64|arm64)$")
    set(${out} scalar neon PARENT_SCOPE)
  else()
    set(${out} scalar PARENT_SCOPE)
  endif()
endfunction()

# Compiler flags and vector width (bytes) of one level. scalar uses one-float vectors, so it is truly
# scalar code on every architecture.
function(gradstate_isa_settings level flags_out bytes_out)
  if(level STREQUAL "x86_v3")
    set(flags -mavx2 -mfma -mf16c)
    set(bytes 32)
  elseif(level STREQUAL "x86_v4" AND GRADSTATE_X86_V4_ON_AVX2)
    # 64-byte vectors without AVX-512: GCC warns that passing them by value has another ABI than with it,
    # which cannot matter here, as the level's functions call only each other.
    set(flags -mavx2 -mfma -mf16c -Wno-psabi)
    set(bytes 64)
  elseif(level STREQUAL "x86_v4")
    set(flags -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c)
    set(bytes 64)
  elseif(level STREQUAL "neon")
    set(flags "")
    set(bytes 16)
  else()
    set(flags "")
    set(bytes 4)
  endif()
  set(${flags_out} "${flags}" PARENT_SCOPE)
  set(${bytes_out} ${bytes} PARENT_SCOPE)
endfunction()

# Adds the kernel sources, compiled for every level, to `target`, and tells `dispatch_source` which levels
# exist (GRADSTATE_HAVE_ISA_<LEVEL>).
function(gradstate_add_isa_kernels target dispatch_source)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  gradstate_isa_levels(levels)
  foreach(level IN LISTS levels)
    gradstate_isa_settings(${level} flags bytes)
    set(objects gradstate_kernels_${level})
    add_library(${objects} OBJECT ${ARG_SOURCES})
    target_include_directories(${objects} PRIVATE ${PROJECT_SOURCE_DIR}/csrc)
    set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ON)
    target_compile_definitions(${objects} PRIVATE GRADSTATE_ISA_NAMESPACE=isa_${level}
                                                  GRADSTATE_ISA_TABLE=kernels_${level}
                                                  GRADSTATE_VECTOR_BYTES=${bytes})
    target_compile_options(${objects} PRIVATE ${flags} ${GRADSTATE_WARNINGS} ${GRADSTATE_SANITIZER_FLAGS})
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:${objects}>)
    string(TOUPPER ${level} upper)
    set_property(SOURCE ${dispatch_source} APPEND PROPERTY COMPILE_DEFINITIONS GRADSTATE_HAVE_ISA_${upper})
  endforeach()
endfunction()
