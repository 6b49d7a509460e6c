# The Metal backend on Linux, for tests: every kernel of GRADSTATE_METAL_KERNELS rewritten into C++ by
# tests/metal_emulation/msl2cpp.py and compiled against its MSL shim, the emulator that runs them, and the
# mock Metal device that the host code talks to through the Objective-C runtime functions it defines.

set(GRADSTATE_EMULATION_DIR ${PROJECT_SOURCE_DIR}/tests/metal_emulation)
set(GRADSTATE_EMULATOR_SOURCES
  ${GRADSTATE_EMULATION_DIR}/dispatch.cpp
  ${GRADSTATE_EMULATION_DIR}/fibers.cpp
  ${GRADSTATE_EMULATION_DIR}/kernel_registry.cpp
)

# The .metal files of `sources` as C++ object files (kernels register by name when loaded) in `target`.
function(gradstate_add_emulated_kernels target)
  set(generated "")
  foreach(source IN LISTS ARGN)
    get_filename_component(name ${source} NAME_WE)
    set(output ${CMAKE_CURRENT_BINARY_DIR}/metal_emulation/${name}.metal.cpp)
    add_custom_command(OUTPUT ${output}
                       COMMAND ${Python_EXECUTABLE} ${GRADSTATE_EMULATION_DIR}/msl2cpp.py ${source} ${output}
                       DEPENDS ${source} ${GRADSTATE_EMULATION_DIR}/msl2cpp.py
                       COMMENT "Rewriting ${name}.metal for the emulator")
    list(APPEND generated ${output})
  endforeach()
  add_library(${target} OBJECT ${generated})
  target_include_directories(${target} PRIVATE ${GRADSTATE_EMULATION_DIR}/shim ${GRADSTATE_EMULATION_DIR}
                                               ${PROJECT_SOURCE_DIR}/csrc ${GRADSTATE_EMULATION_DIR}/selftest)
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_options(${target} PRIVATE ${GRADSTATE_SANITIZER_FLAGS})
endfunction()

# Gives `core`'s consumers (the extension module, the harness) the emulated kernels and the mock device as
# object files: linked from a static library, the kernels' registrations would be dropped. Adds the harness
# executables: gradstate_metal_emulation_test (the Metal backend against the CPU backend) and
# gradstate_emulator_selftest (the emulator finds the bugs planted in its own test kernels).
function(gradstate_add_metal_emulation core)
  gradstate_metal_kernel_sources(kernels)
  gradstate_add_emulated_kernels(gradstate_emulated_kernels ${kernels})

  add_library(gradstate_metal_mock OBJECT ${GRADSTATE_EMULATOR_SOURCES} ${GRADSTATE_EMULATION_DIR}/mock_metal.cpp)
  target_include_directories(gradstate_metal_mock PRIVATE ${GRADSTATE_EMULATION_DIR})
  set_target_properties(gradstate_metal_mock PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_options(gradstate_metal_mock PRIVATE ${GRADSTATE_WARNINGS} ${GRADSTATE_SANITIZER_FLAGS})
  target_sources(${core} INTERFACE $<TARGET_OBJECTS:gradstate_emulated_kernels>
                                   $<TARGET_OBJECTS:gradstate_metal_mock>)

  add_executable(gradstate_metal_emulation_test ${GRADSTATE_EMULATION_DIR}/test_backend.cpp)
  target_include_directories(gradstate_metal_emulation_test PRIVATE ${GRADSTATE_EMULATION_DIR})
  target_compile_options(gradstate_metal_emulation_test PRIVATE ${GRADSTATE_WARNINGS} ${GRADSTATE_SANITIZER_FLAGS})
  target_link_libraries(gradstate_metal_emulation_test PRIVATE ${core})

  file(GLOB selftest_kernels ${GRADSTATE_EMULATION_DIR}/selftest/*.metal)
  gradstate_add_emulated_kernels(gradstate_selftest_kernels ${selftest_kernels})
  add_executable(gradstate_emulator_selftest ${GRADSTATE_EMULATION_DIR}/selftest.cpp ${GRADSTATE_EMULATOR_SOURCES}
                                             $<TARGET_OBJECTS:gradstate_selftest_kernels>)
  target_include_directories(gradstate_emulator_selftest PRIVATE ${GRADSTATE_EMULATION_DIR}
                                                                 ${GRADSTATE_EMULATION_DIR}/selftest)
  target_compile_options(gradstate_emulator_selftest PRIVATE ${GRADSTATE_WARNINGS} ${GRADSTATE_SANITIZER_FLAGS})
endfunction()
