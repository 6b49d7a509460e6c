# The Metal kernels: one .metal file per op in csrc/gradstate/metal/kernels. This list is the one every
# consumer uses: the offline metallib (macOS), the sources embedded for run-time compilation, and the Linux
# emulation harness.
set(GRADSTATE_METAL_KERNELS convolution instance_norm)

set(GRADSTATE_METAL_KERNEL_DIR ${PROJECT_SOURCE_DIR}/csrc/gradstate/metal/kernels)
set(GRADSTATE_METAL_PARAMS ${PROJECT_SOURCE_DIR}/csrc/gradstate/core/params.h)

function(gradstate_metal_kernel_sources out)
  set(sources "")
  foreach(kernel IN LISTS GRADSTATE_METAL_KERNELS)
    list(APPEND sources ${GRADSTATE_METAL_KERNEL_DIR}/${kernel}.metal)
  endforeach()
  set(${out} ${sources} PARENT_SCOPE)
endfunction()

# Adds to `target` a generated source holding the kernels' text (see embed_metal_sources.cmake).
function(gradstate_embed_metal_sources target)
  gradstate_metal_kernel_sources(sources)
  set(output ${CMAKE_CURRENT_BINARY_DIR}/embedded_kernels.cpp)
  string(REPLACE ";" "|" source_list "${sources}")  # a list would become separate command arguments
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${output} -DPARAMS=${GRADSTATE_METAL_PARAMS} "-DSOURCES=${source_list}"
            -P ${PROJECT_SOURCE_DIR}/cmake/embed_metal_sources.cmake
    DEPENDS ${sources} ${GRADSTATE_METAL_PARAMS} ${PROJECT_SOURCE_DIR}/cmake/embed_metal_sources.cmake
    COMMENT "Embedding the Metal kernel sources"
    VERBATIM)
  target_sources(${target} PRIVATE ${output})
endfunction()

# macOS: compiles every kernel with the offline compiler (`xcrun -sdk macosx metal`, same deployment target
# as the C++ code, no fast math) into gradstate.metallib, installed beside the extension module. Without
# the offline compiler (Command Line Tools only, or Xcode 26+ without its Metal toolchain) it says so, and
# the module compiles the embedded sources at run time instead.
function(gradstate_add_metallib install_destination)
  execute_process(COMMAND xcrun -sdk macosx --find metal OUTPUT_VARIABLE metal_compiler
                  RESULT_VARIABLE found ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT found EQUAL 0)
    message(STATUS "gradstate: no offline Metal compiler; the kernels will be compiled at run time")
    return()
  endif()
  # Metal's check of the compiled kernels: a probe compile, since the compiler can exist but lack its toolchain.
  set(probe ${CMAKE_CURRENT_BINARY_DIR}/metal_probe.metal)
  file(WRITE ${probe} "kernel void probe() {}\n")
  execute_process(COMMAND xcrun -sdk macosx metal -c ${probe} -o ${probe}.air RESULT_VARIABLE probe_result
                  OUTPUT_QUIET ERROR_QUIET)
  if(NOT probe_result EQUAL 0)
    message(STATUS "gradstate: the Metal compiler does not run (toolchain missing?); kernels compiled at run time")
    return()
  endif()

  set(flags -fno-fast-math -I ${PROJECT_SOURCE_DIR}/csrc)
  if(CMAKE_OSX_DEPLOYMENT_TARGET)
    list(APPEND flags -mmacosx-version-min=${CMAKE_OSX_DEPLOYMENT_TARGET})
  endif()
  if(GRADSTATE_METAL_WERROR)
    list(APPEND flags -Werror)
  endif()
  gradstate_metal_kernel_sources(sources)
  set(airs "")
  foreach(source IN LISTS sources)
    get_filename_component(name ${source} NAME_WE)
    set(air ${CMAKE_CURRENT_BINARY_DIR}/${name}.air)
    add_custom_command(OUTPUT ${air}
                       COMMAND xcrun -sdk macosx metal ${flags} -c ${source} -o ${air}
                       DEPENDS ${source} ${GRADSTATE_METAL_PARAMS}
                       COMMENT "Compiling Metal kernels ${name}.metal")
    list(APPEND airs ${air})
  endforeach()
  set(metallib ${CMAKE_CURRENT_BINARY_DIR}/gradstate.metallib)
  add_custom_command(OUTPUT ${metallib} COMMAND xcrun -sdk macosx metallib ${airs} -o ${metallib}
                     DEPENDS ${airs} COMMENT "Linking gradstate.metallib")
  add_custom_target(gradstate_metallib ALL DEPENDS ${metallib})
  install(FILES ${metallib} DESTINATION ${install_destination})
endfunction()
