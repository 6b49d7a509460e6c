# Run as `cmake -DOUTPUT=... -DPARAMS=... -DSOURCES="a.metal|b.metal" -P embed_metal_sources.cmake`: writes a C++
# file whose embedded_kernel_source() returns every kernel source in one text, with the shared parameter
# header pasted once in place of its #include lines, so that Metal can compile it at run time without
# include paths.

string(REPLACE "|" ";" SOURCES "${SOURCES}")
file(READ "${PARAMS}" params)
string(REGEX REPLACE "#pragma once\n" "" params "${params}")
set(text "#include <metal_stdlib>\n${params}\n")
foreach(source IN LISTS SOURCES)
  file(READ "${source}" kernel)
  string(REGEX REPLACE "#include \"gradstate/core/params.h\"\n" "" kernel "${kernel}")
  string(APPEND text "${kernel}\n")
endforeach()

file(WRITE "${OUTPUT}.tmp" "// Generated from the Metal kernel sources; do not edit.\n"
  "#include \"gradstate/metal/embedded_kernels.h\"\n\n"
  "namespace gradstate::metal {\n\n"
  "const char* embedded_kernel_source() {\n"
  "  return R\"gradstate_metal(${text})gradstate_metal\";\n"
  "}\n\n"
  "}  // namespace gradstate::metal\n")
# Rewrite only on change, so that an unchanged kernel does not rebuild what depends on the file.
configure_file("${OUTPUT}.tmp" "${OUTPUT}" COPYONLY)
file(REMOVE "${OUTPUT}.tmp")
