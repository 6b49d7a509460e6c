#!/usr/bin/env python3
"""Rewrite one .metal file into a C++ translation unit for the project's Metal emulator.

Usage: python3 msl2cpp.py IN.metal OUT.cpp

The output is the .metal source with a few edits that keep every line where it was (a `#line` directive
maps it back), so that compiler errors and AddressSanitizer reports point into the .metal file:

* a kernel-scope `threadgroup T name[N][M];` becomes a reference to the running threadgroup's storage;
* a multi-component swizzle `v.xy` (xyzw only) becomes `v.template swizzle<0, 1>()`, or `swizzle_ref` when
  assigned to;
* every `[[attribute]]` is blanked.

Then, per kernel, a registration binds each parameter from its attribute ([[buffer(i)]], [[threadgroup(i)]]
or a builtin such as [[thread_position_in_grid]]) and registers the kernel by name when the program starts.
Template kernels are registered per `template [[host_name("name")]] kernel void f<T>(...);` instantiation.

The rewriting is lexical: kernels must be declared at global scope, and preprocessor conditionals are not
evaluated (a kernel inside `#if 0` would still be registered).
"""

import re
import sys
from dataclasses import dataclass

# Builtin attributes the emulator provides, named as in kernel_abi.h's ArgumentKind.
BUILTINS = {
    "thread_position_in_grid",
    "thread_position_in_threadgroup",
    "threadgroup_position_in_grid",
    "threads_per_threadgroup",
    "threadgroups_per_grid",
    "threads_per_grid",
    "thread_index_in_threadgroup",
    "thread_index_in_simdgroup",
    "simdgroup_index_in_threadgroup",
    "threads_per_simdgroup",
    "simdgroups_per_threadgroup",
}
BUILTIN_ALIASES = {"thread_execution_width": "threads_per_simdgroup"}
ADDRESS_SPACES = re.compile(r"\b(device|constant|threadgroup|thread)\b")
ATTRIBUTE = re.compile(r"\[\[(.*?)\]\]", re.S)
# Only xyzw swizzles: an rgba one (v.rg) is too easily a struct member (p.bar).
SWIZZLE = re.compile(r"(?<=[\w)\]])(\.|->)\s*([xyzw]{2,4})\b")
COMPONENTS = {c: i for i, c in enumerate("xyzw")}
ASSIGNMENT = re.compile(r"\s*(?:<<|>>|[-+*/%&|^])?=(?!=)")
DEFINITION = re.compile(r"\bvoid\s+(\w+)\s*\(")
INSTANTIATION = re.compile(
    r"\btemplate\s*\[\[\s*host_name\s*\(\s*\"([^\"]+)\"\s*\)\s*\]\]"
    r"(?:\s*\[\[\s*kernel\s*\]\]|\s*\bkernel\b)?\s*void\s+(\w+)\s*<([^;{]*?)>\s*\("
)


class TranslationError(Exception):
    pass


@dataclass
class Parameter:
    kind: str  # an ArgumentKind name
    index: str  # the i of buffer(i) / threadgroup(i), as written; "0" for builtins


@dataclass
class Kernel:
    name: str
    parameters: list
    max_threads: str  # "0" when the kernel does not declare [[max_total_threads_per_threadgroup(n)]]
    is_template: bool


def line_of(source, offset):
    return source.count("\n", 0, offset) + 1


def mask_comments_and_directives(source):
    """The source with comments and preprocessor lines replaced by spaces (newlines kept), for scanning."""
    out = list(source)

    def blank(start, end):
        for k in range(start, end):
            if out[k] != "\n":
                out[k] = " "

    i, n = 0, len(source)
    while i < n:
        line_start = source.rfind("\n", 0, i) + 1
        if source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
        elif source[i] == "#" and source[line_start:i].strip() == "":
            end = i
            while end < n and source[end] != "\n":
                end += 2 if source.startswith("\\\n", end) else 1  # continued over escaped newlines
        elif source[i] == '"':
            end = i + 1
            while end < n and source[end] != '"':
                end += 2 if source[end] == "\\" else 1
            i = end + 1
            continue
        else:
            i += 1
            continue
        blank(i, end)
        i = end
    return "".join(out)


def matching_close(scan, open_offset):
    """Offset of the bracket closing the one at open_offset."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    opening = scan[open_offset]
    depth = 0
    for i in range(open_offset, len(scan)):
        if scan[i] == opening:
            depth += 1
        elif scan[i] == pairs[opening]:
            depth -= 1
            if depth == 0:
                return i
    raise TranslationError(f"line {line_of(scan, open_offset)}: unbalanced '{opening}'")


def split_top_level(text):
    """Split at the commas outside any brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def parse_parameter(kernel, text, line):
    where = f"line {line}: kernel {kernel}"
    attributes = [a.strip() for a in ATTRIBUTE.findall(text)]
    declaration = ATTRIBUTE.sub(" ", text).strip()
    if len(attributes) != 1:
        raise TranslationError(f"{where}: parameter {declaration!r} needs exactly one attribute")
    match = re.fullmatch(r"(\w+)\s*(?:\(\s*(.*?)\s*\))?", attributes[0], re.S)
    if not match:
        raise TranslationError(f"{where}: cannot read attribute [[{attributes[0]}]]")
    attribute, argument = match.group(1), match.group(2)
    by_reference = "*" in declaration or "&" in declaration
    if attribute in ("buffer", "threadgroup"):
        if argument is None or not by_reference:
            raise TranslationError(
                f"{where}: [[{attribute}(i)]] parameter {declaration!r} must be a pointer or reference"
            )
        if not ADDRESS_SPACES.search(declaration):
            raise TranslationError(f"{where}: {declaration!r} has no address space (device, constant, ...)")
        kind = "buffer" if attribute == "buffer" else "threadgroup_memory"
        return Parameter(kind, argument)
    attribute = BUILTIN_ALIASES.get(attribute, attribute)
    if attribute in BUILTINS:
        if by_reference:
            raise TranslationError(f"{where}: builtin parameter {declaration!r} must be passed by value")
        return Parameter(attribute, "0")
    raise TranslationError(f"{where}: unsupported parameter attribute [[{attributes[0]}]]")


def statement_start(scan, offset):
    """Offset just after the `;`, `{` or `}` that precedes offset."""
    start = max(scan.rfind(c, 0, offset) for c in ";{}")
    return start + 1


def find_kernels(scan):
    """Kernel definitions: a `void name(` whose declaration carries `kernel` or [[kernel]]."""
    kernels = {}
    for match in DEFINITION.finditer(scan):
        prefix = scan[statement_start(scan, match.start()) : match.start()]
        if not re.search(r"\bkernel\b", prefix):
            continue
        name = match.group(1)
        open_paren = match.end() - 1
        close_paren = matching_close(scan, open_paren)
        line = line_of(scan, match.start())
        parameters = [
            parse_parameter(name, text, line) for text in split_top_level(scan[open_paren + 1 : close_paren])
        ]
        if not parameters:
            raise TranslationError(f"line {line}: kernel {name} has no parameters")
        for kind in ("buffer", "threadgroup_memory"):
            indices = [p.index for p in parameters if p.kind == kind]
            if len(indices) != len(set(indices)):
                raise TranslationError(f"line {line}: kernel {name} binds two parameters to one {kind} index")
        max_threads = re.search(r"max_total_threads_per_threadgroup\s*\(\s*(\w+)\s*\)", prefix)
        kernels[name] = Kernel(
            name=name,
            parameters=parameters,
            max_threads=max_threads.group(1) if max_threads else "0",
            is_template=re.search(r"\btemplate\s*<", prefix) is not None,
        )
    return kernels


def threadgroup_variable_edits(scan):
    """Kernel-scope `threadgroup T a[N], b;` -> references to the threadgroup's storage, numbered by slot."""
    edits, slot = [], 0
    for match in re.finditer(r"\bthreadgroup\b", scan):
        start = match.start()
        inside_function = scan.count("{", 0, start) > scan.count("}", 0, start)
        at_statement_start = scan[statement_start(scan, start) : start].strip() == ""
        if not (inside_function and at_statement_start):
            continue
        end = scan.index(";", start)
        declarators = split_top_level(scan[match.end() : end])
        if any("*" in d or "&" in d for d in declarators):
            continue  # a pointer or reference to threadgroup memory: the keyword macro erases the qualifier
        line = line_of(scan, start)
        if any("=" in d for d in declarators):
            raise TranslationError(f"line {line}: a threadgroup variable cannot be initialized")
        first = re.fullmatch(r"\s*(.+?)\s*\b(\w+)\s*((?:\[[^\]]*\]\s*)*)", declarators[0], re.S)
        if not first:
            raise TranslationError(
                f"line {line}: cannot read threadgroup declaration {declarators[0].strip()!r}"
            )
        element_type = first.group(1)
        statements = []
        for declarator in [first.group(2) + first.group(3)] + declarators[1:]:
            named = re.fullmatch(r"\s*(\w+)\s*((?:\[[^\]]*\]\s*)*)", declarator, re.S)
            if not named:
                raise TranslationError(
                    f"line {line}: cannot read threadgroup declarator {declarator.strip()!r}"
                )
            name, extents = named.group(1), re.sub(r"\s+", " ", named.group(2)).strip()
            statements.append(
                f"auto& {name} = ::msl_emulator::detail::threadgroup_storage<{element_type}{extents}>({slot})"
            )
            slot += 1
        edits.append((start, end, "; ".join(statements)))
    return edits


def swizzle_edits(scan):
    """v.xy -> v.template swizzle<0, 1>() when read, v.template swizzle_ref<0, 1>() when assigned to."""
    edits = []
    for match in SWIZZLE.finditer(scan):
        indices = ", ".join(str(COMPONENTS[c]) for c in match.group(2))
        written = ASSIGNMENT.match(scan, match.end()) is not None
        function = "swizzle_ref" if written else "swizzle"
        edits.append((match.start(), match.end(), f"{match.group(1)}template {function}<{indices}>()"))
    return edits


def attribute_edits(scan):
    return [(m.start(), m.end(), "") for m in ATTRIBUTE.finditer(scan)]


def apply_edits(source, edits):
    """Replace the spans, keeping the newlines of each replaced span so that lines stay put."""
    out, previous = [], 0
    for start, end, replacement in sorted(edits):
        if start < previous:
            raise TranslationError(f"line {line_of(source, start)}: overlapping rewrites")
        out.append(source[previous:start])
        out.append(replacement + "\n" * source.count("\n", start, end))
        previous = end
    out.append(source[previous:])
    return "".join(out)


def registrations(kernels, instantiations):
    """C++ that registers every non-template kernel and every named template instantiation."""
    entries = [(k.name, k.name, k) for k in kernels.values() if not k.is_template]
    for host_name, function, arguments in instantiations:
        if function not in kernels:
            raise TranslationError(f"host_name {host_name!r} instantiates {function}, which is not a kernel")
        entries.append((host_name, f"{function}<{arguments.strip()}>", kernels[function]))
    lines = ["namespace {"]
    for i, (host_name, function, kernel) in enumerate(entries):
        specs = ",\n".join(
            f"    {{::msl_emulator::detail::ArgumentKind::{p.kind}, {p.index}}}" for p in kernel.parameters
        )
        lines += [
            f"constexpr ::msl_emulator::detail::ArgumentSpec msl_emulator_arguments_{i}[] = {{",
            specs,
            "};",
            f"const ::msl_emulator::detail::KernelRegistration msl_emulator_registration_{i}(",
            f"    ::msl_emulator::detail::describe_kernel<&{function}>(",
            f'        "{host_name}", msl_emulator_arguments_{i}, {kernel.max_threads}));',
        ]
    lines.append("}  // namespace")
    return "\n".join(lines) + "\n"


def translate(source, input_path, output_path):
    scan = mask_comments_and_directives(source)
    kernels = find_kernels(scan)
    instantiations = INSTANTIATION.findall(scan)
    edits = threadgroup_variable_edits(scan) + swizzle_edits(scan) + attribute_edits(scan)
    body = apply_edits(source, edits)
    if not body.endswith("\n"):
        body += "\n"
    header = [
        f"// Generated by msl2cpp.py from {input_path}; do not edit.",
        '#include "kernel_launcher.h"',
        "#define __METAL_VERSION__ 310",
        f'#line 1 "{input_path}"',
    ]
    text = "\n".join(header) + "\n" + body
    text += f'#line {text.count(chr(10)) + 2} "{output_path}"\n'
    return text + "// Kernel registrations\n" + registrations(kernels, instantiations)


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: msl2cpp.py IN.metal OUT.cpp")
    input_path, output_path = argv[1], argv[2]
    with open(input_path, encoding="utf-8") as f:
        source = f.read()
    try:
        text = translate(source, input_path, output_path)
    except TranslationError as e:
        sys.exit(f"{input_path}: msl2cpp: {e}")
    with open(output_path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv)
