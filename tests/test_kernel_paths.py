"""Shapes that steer the CPU kernels down each of their paths and through each of their tails.

The weight gradient has five paths on NHWC data (NCHW layers run them on NHWC copies of x and dy, whole
images, at most 8 MiB or one, at a time, but for depthwise layers of at least 2 vectors of channels, which
copy one image's block of channels at a time where the blocks make at least 8 tasks and hold at most 2 MiB
each, the other depthwise layers at stride 1 with output rows of at least 32 values and kernels of at most 7
columns, which take their planes in place, and 1x1 layers, see below): Winograd's F(2x2, 3x3) for dense 3x3
stride-1 layers, up to 8 MiB of transformed gradient dU in 8 or fewer work items (parts of the tiles times
groups of output channels) that each run their tiles in blocks, or, from 1 MiB of dU on (past 8 MiB too) where
the transformed tiles take at most 16 MiB, all tiles transformed up front and dW taken in blocks of output and
input channels; kernel rows read in place for layers of one group, no dilation across and up to 1 MiB of dW
padded to whole tiles (512 KiB for 1x1) with at most 4 input channels, or 1x1 with output rows of at least 32
pixels, or larger kernels with output rows of at least 28 pixels and 4 (image, band) pairs; a GEMM per group
(groups == 1, or more than 8 output or input channels per group) with register tiles of 6 x 64 or 8 x 48
(AVX-512), 6 x 16 or 4 x 24 (AVX2), 4 x 4 (scalar), possibly transposed, column blocks of at most 512 columns
(KH * KW * I / groups of them) and, when there are few column blocks and many pixels, the pixel sum split into
segments; depthwise, read in place pixel by pixel over sweeps of at most 3 taps of a kernel row, in the widest
blocks of 8, 4 or 2 vectors of channels (4 or 2 on AVX2) the channels fill, border pixels reading zeros (3x3
at stride 1 or 2 without dilation on NEON, and on AVX-512 at stride 1 and for the copied blocks of NCHW layers
at stride 2: sweeps of two output rows, one vector of channels, in bands of an even number of rows but for the
last; else, and on AVX2 and at the scalar level, sweeps of one output row with all 9 taps, in groups of 4
pixels, all channels of a group in turn; and on AVX2 and AVX-512 the same sweeps for 3x3 layers at stride 1 or
2 without dilation, of at least two vectors of channels, with 2 channels in and out per group, once per
channel of a group, and with 4, sweeps of outer products a group at a time over copies of the rows of x, all 9
taps at once with 16 lanes); and "vectors across groups" for the other small groups (at most 8 output and 8
input channels per group), which sweeps the taps 9 at a time. The forward pass of 1x1 stride-1 layers without
padding in NCHW is a GEMM per image on the tensors as they lie, and so is their weight gradient for planes of
at least 256 pixels (with dy copied into NHWC). The forward pass of dense 3x3 layers of at least 16 channels
runs Winograd's F(2x2, 3x3) at stride 1 and its stride-2 counterpart (25 products per 2x2 tile) at stride 2
without dilation; otherwise a GEMM when a group has at least 8 output channels; dx runs one at stride 1 as a
forward pass (at least 8 input channels per group), the data-gradient counterpart of the stride-2 scheme (25
products per 4x4 tile of dx) for such layers at stride 2 with odd padding both ways, and at other strides in
stride phases (forward GEMMs writing every stride-th pixel; at least 32 input channels per group, no dilation)
or else through col2im (at least 8 output channels per group); with fewer channels per group, vectors across
groups (one shuffle of the source pixel's vectors per source channel of a group), when a block of lanes'
sources fit two vectors. Instance norm sums blocks of 512 pixels, one plane per task in NCHW and 256 channels
per task in NHWC. Every case is checked against the float64 reference in both layouts; test_cpu_isa.py runs
this file at every instruction-set level.
"""

import gradstate as gs
import numpy as np
import pytest
import reference as ref
from conftest import (
    ConvCase,
    assert_close,
    check_conv,
    check_norm,
    check_second_backward,
    f32,
    from_layout,
    in_layout,
)

LAYOUTS = ["NHWC", "NCHW"]

# (N, H, W, I, O, kernel, stride, dilation, groups, padding)
CONV_PATHS = [
    # GEMM path with groups: 18 output and 18 input channels per group, one GEMM per group.
    pytest.param((2, 9, 9, 36, 36, 3, 1, 1, 2, "same"), id="gemm_groups2_18_per_group"),
    # Just past the grouped path's limit on input channels (8 out, 9 in per group): GEMM.
    pytest.param((2, 7, 8, 18, 16, 3, 1, 1, 2, "same"), id="gemm_groups2_8_out_9_in"),
    # 13 output channels (6 + 6 + 1, or 4 + 4 + 4 + 1 in scalar code) and 45 columns, a multiple of
    # neither 64, 16 nor 4: the last tile is partial in both directions.
    pytest.param((2, 8, 7, 5, 13, 3, 1, 1, 1, "same"), id="gemm_tile_tails_o13_i5"),
    # More than 2^21 output values: the forward GEMM streams its full tiles past the caches and stores the
    # others (272 output channels: five tiles of 48 and one of 32 at AVX-512; 3906 pixels per image, not a
    # multiple of the tile's rows); dx at stride 1 likewise (272 input channels) in NHWC, where in NCHW it is
    # the GEMM per image, which does not stream.
    pytest.param((2, 62, 63, 8, 272, 5, 1, 1, 1, "same"), id="gemm_streamed_output_tails"),
    pytest.param((2, 62, 63, 272, 8, 1, 1, 1, 1, 0), id="gemm_streamed_dx_1x1"),
    # 2^21 dx values at stride 2: the stride phases stream their copies out of the scratch.
    pytest.param((2, 64, 64, 256, 16, 3, 2, 1, 1, 0), id="gemm_streamed_dx_stride_phases"),
    # 64 * 9 = 576 columns: two column blocks.
    pytest.param((1, 8, 8, 64, 8, 3, 1, 1, 1, "same"), id="gemm_two_column_blocks_576"),
    # 3200 pixels and one column block: the pixel sum is split into segments, none a multiple of the
    # 256-pixel panel.
    pytest.param((2, 40, 40, 8, 8, 3, 1, 1, 1, "same"), id="gemm_pixel_segments_3200"),
    # 1024 pixels: the most that stays one segment.
    pytest.param((1, 32, 32, 8, 8, 3, 1, 1, 1, "same"), id="gemm_one_segment_1024"),
    # First layer of an image network: 3 input channels, 7x7 stride 2, padding 3 (rows in the padding,
    # taps partly outside the image). In NHWC, layers of at most 4 input channels read the kernel rows'
    # values in place, blocks of them per output row, pixels near the borders gathered with zeros: one
    # channel with 70 outputs (two vector blocks at AVX-512, the second partial) and asymmetric padding;
    # four channels with strides 2 and 3, rows dilated and padding wider than the kernel; a kernel wider
    # than the image (most blocks of values reach the padding at every pixel); 4480 output pixels, two
    # bands of rows.
    pytest.param((2, 30, 30, 3, 16, 7, 2, 1, 1, 3), id="first_layer_7x7_s2"),
    pytest.param((3, 13, 11, 1, 70, 5, 1, 1, 1, (2, 0, 3, 1)), id="first_layer_1_channel_70_out"),
    pytest.param((2, 9, 17, 4, 8, (3, 5), (2, 3), (2, 1), 1, (1, 4, 2, 2)), id="first_layer_4_channels"),
    pytest.param((1, 5, 4, 2, 24, 7, 1, 1, 1, 3), id="first_layer_kernel_wider_than_image"),
    pytest.param((1, 70, 64, 3, 8, 3, 1, 1, 1, "same"), id="first_layer_two_bands"),
    # 1x1 kernels with output rows of at least 32 pixels take that path too: 20 channels (blocks of 6 rows,
    # the last partial) for 13 outputs, stride 2, and padding (a row and the border columns read zeros).
    pytest.param((2, 3, 33, 20, 13, 1, 1, 1, 1, 0), id="in_place_1x1_20_to_13"),
    pytest.param((1, 4, 70, 24, 40, 1, 2, 1, 1, 0), id="in_place_1x1_stride2"),
    pytest.param((1, 3, 34, 8, 16, 1, 1, 1, 1, 1), id="in_place_1x1_padding"),
    # 34 images whose partial dW (240 x 256) would outgrow the 8 MiB bound, one each: tasks of two images.
    pytest.param((34, 1, 32, 240, 256, 1, 1, 1, 1, 0), id="in_place_1x1_tasks_of_two_images"),
    # Larger kernels with output rows of at least 28 pixels and 4 (image, band) pairs take it too: 3x3
    # stride 2 (39 values a kernel row: blocks of 6 at the vector levels, the last partial; 70 outputs), 5x5
    # with padding 2 (4 images, the fewest), rows dilated (not columns), two images of 5 bands each, and 10
    # images of one output row, whose partials (900 KiB each) bound the tasks to 9: a task takes two images,
    # each with kernel rows in the padding above and below.
    pytest.param((8, 5, 57, 13, 70, 3, 2, 1, 1, 1), id="in_place_3x3_stride2_13_to_70"),
    pytest.param((4, 4, 30, 9, 20, 5, 1, 1, 1, 2), id="in_place_5x5_9_to_20"),
    pytest.param((8, 7, 30, 6, 8, 3, 1, (2, 1), 1, 1), id="in_place_3x3_rows_dilated"),
    pytest.param((2, 300, 56, 5, 6, 3, 1, 1, 1, 1), id="in_place_3x3_bands"),
    pytest.param((10, 1, 57, 100, 256, 3, 2, 1, 1, 1), id="in_place_3x3_tasks_of_two_images"),
    pytest.param((2, 9, 9, 24, 20, 1, 1, 1, 1, 0), id="gemm_1x1"),
    # In NCHW, 1x1 stride-1 layers without padding run the forward pass (and so dx) as a GEMM per image, in
    # tasks of about 128 pixels and panels of up to 256 input channels: 300 channels make two panels, the
    # second adding to the first's sums and bias; 13 and 70 output channels leave a partial tile of rows,
    # 35 and 323 pixels a partial block of pixels; dx of 24 channels from 70 through the same GEMM.
    pytest.param((2, 5, 7, 300, 13, 1, 1, 1, 1, 0), id="pointwise_nchw_two_panels"),
    pytest.param((3, 17, 19, 24, 70, 1, 1, 1, 1, 0), id="pointwise_nchw_tasks"),
    # Their weight gradient, from planes of 256 pixels on, sums x times dy copied into NHWC, in steps of 256
    # pixels and tasks of about 64 input by 64 output channels (whole tiles): 420 pixels (a step and a part),
    # 13 and 70 input channels (a partial tile, read from a zero-padded copy; 70 make two blocks), 37 and 130
    # output channels (a partial tile; 130 make two or three blocks); dy of 8 MiB an image, copied one image
    # at a time.
    pytest.param((3, 20, 21, 13, 37, 1, 1, 1, 1, 0), id="pointwise_nchw_weights_steps"),
    pytest.param((2, 16, 16, 70, 130, 1, 1, 1, 1, 0), id="pointwise_nchw_weights_tasks"),
    pytest.param((2, 64, 64, 8, 512, 1, 1, 1, 1, 0), id="pointwise_nchw_weights_chunks"),
    # Dilation turns off the contiguous-row packing of NHWC.
    pytest.param((2, 11, 10, 8, 12, 3, 1, 2, 1, "same"), id="gemm_dilation2_same"),
    # Winograd F(2x2, 3x3) for dense 3x3 stride-1 layers of at least 16 channels, forward and dx: odd output
    # sizes (tiles cut by the last row and column), channels that are no multiple of any vector width,
    # padding 0 (and so 2 for dx's flipped pass), 1, wider than the kernel (a negative padding for dx) and
    # asymmetric, one image and three, and enough tiles for blocks with a partial last microkernel tile.
    pytest.param((1, 7, 9, 16, 16, 3, 1, 1, 1, "same"), id="winograd_odd_sizes_16"),
    pytest.param((3, 6, 5, 37, 21, 3, 1, 1, 1, 0), id="winograd_no_padding_37_to_21"),
    pytest.param((2, 9, 8, 19, 33, 3, 1, 1, 1, (3, 0, 1, 4)), id="winograd_wide_asymmetric_padding"),
    pytest.param((2, 31, 29, 24, 70, 3, 1, 1, 1, "same"), id="winograd_many_tiles_70"),
    # Dilation: a tile's rows and columns are the dilation apart, and tiles of the last rows of a residue
    # can start past the output (7 rows at dilation 2: residue 0 has rows 0, 2, 4, 6, residue 1 rows 1, 3,
    # 5); different dilations across and down, and a dilation wider than half the output.
    pytest.param((2, 7, 9, 20, 18, 3, 1, 2, 1, "same"), id="winograd_dilation2_odd_sizes"),
    pytest.param((1, 11, 13, 17, 16, 3, 1, (2, 3), 1, (1, 3, 0, 2)), id="winograd_dilation_2_3"),
    pytest.param((2, 6, 5, 16, 16, 3, 1, 4, 1, "same"), id="winograd_dilation4_small_image"),
    # The forward pass's stride-2 scheme (5x5 patches four pixels apart, 2x2 output tiles): odd output sizes,
    # no padding, "same" (one row and column more at the bottom and right), wide and asymmetric padding,
    # channels no multiple of any vector width, many tiles in several blocks, and over 2 MiB of transformed
    # weights (160 x 144 channels), whose blocks the threads share step by step.
    pytest.param((1, 7, 9, 16, 16, 3, 2, 1, 1, "same"), id="winograd_stride2_odd_sizes_16"),
    pytest.param((3, 10, 7, 37, 21, 3, 2, 1, 1, 0), id="winograd_stride2_no_padding_37_to_21"),
    pytest.param((2, 9, 8, 19, 33, 3, 2, 1, 1, (3, 0, 1, 4)), id="winograd_stride2_wide_asymmetric_padding"),
    pytest.param((2, 31, 29, 24, 70, 3, 2, 1, 1, 1), id="winograd_stride2_many_tiles_70"),
    pytest.param((1, 9, 11, 160, 144, 3, 2, 1, 1, 1), id="winograd_stride2_shared_blocks"),
    # The data gradient's stride-2 scheme (3x3 patches of dy two pixels apart, 4x4 tiles of dx), for odd
    # padding both ways, which most of the cases above have too: one tile; the last row and column of dx
    # read by no tap (zeros) and tiles cut by dx's borders; padding 3 and 5, as wide as the kernel and
    # wider, with channels no multiple of any vector width.
    pytest.param((1, 4, 4, 16, 16, 3, 2, 1, 1, 1), id="winograd_stride2_dx_one_tile"),
    pytest.param((2, 7, 11, 16, 20, 3, 2, 1, 1, (1, 0, 1, 0)), id="winograd_stride2_dx_unread_edges"),
    pytest.param((1, 10, 13, 21, 17, 3, 2, 1, 1, (3, 1, 5, 0)), id="winograd_stride2_dx_wide_odd_padding"),
    # The weight gradient's work items: parts of the tiles (each with its own dU) times groups of output
    # channel blocks. 9 tiles of 120 x 130 channels: one part, its output blocks in groups, the last group
    # shorter at every level. 484 tiles of them: 4 parts of 2 groups (AVX-512). 16 x 512 channels: one part
    # of 8 groups (AVX-512).
    pytest.param((1, 5, 6, 120, 130, 3, 1, 1, 1, "same"), id="winograd_weights_output_groups"),
    pytest.param((1, 44, 43, 120, 130, 3, 1, 1, 1, "same"), id="winograd_weights_parts_and_groups"),
    pytest.param((1, 6, 5, 16, 512, 3, 1, 1, 1, "same"), id="winograd_weights_one_part_8_groups"),
    # From 1 MiB of dU on, layers with few tiles transform them all up front and take dW in blocks of output
    # and input channels: 256 x 256 channels; 130 input channels (a partial last block, a partial last vector)
    # for 140 outputs (a partial last microkernel tile), 50 tiles (sums of dy over chunks of 16, the last
    # partial); dilation with asymmetric padding; 320 x 448 channels, whose 9 MiB of dU is past the other
    # scheme's bound; and 216 tiles, whose GEMMs run over 128 tiles and then add the last 88.
    pytest.param((1, 6, 5, 256, 256, 3, 1, 1, 1, "same"), id="winograd_weights_few_tiles_256"),
    pytest.param((2, 9, 9, 130, 140, 3, 1, 1, 1, "same"), id="winograd_weights_few_tiles_partial_blocks"),
    pytest.param((1, 9, 7, 128, 136, 3, 1, 2, 1, (2, 1, 0, 3)), id="winograd_weights_few_tiles_dilation2"),
    pytest.param((1, 4, 5, 320, 448, 3, 1, 1, 1, "same"), id="winograd_weights_few_tiles_large_du"),
    pytest.param((3, 15, 17, 128, 130, 3, 1, 1, 1, "same"), id="winograd_weights_few_tiles_gemm_chunks"),
    # 7200 tiles of 17 input and 20 output channels: 8 parts of 900 tiles, each run in several equal blocks
    # that accumulate into its dU one after another, with channels that fill neither the microkernel's rows
    # nor its vectors.
    pytest.param((2, 120, 120, 17, 20, 3, 1, 1, 1, "same"), id="winograd_weights_blocks"),
    # Depthwise with 37 channels: full blocks of groups and a partial one at every vector width.
    # The forward GEMM, and dx at stride 1 as a forward pass with flipped weights: padding wider than the
    # kernel (a negative padding for the flipped pass), asymmetric, with dilation, and with groups.
    pytest.param((2, 9, 8, 12, 10, 3, 1, 1, 1, (3, 0, 1, 4)), id="gemm_stride1_wide_padding"),
    pytest.param((2, 9, 8, 12, 10, 3, 1, 2, 1, (5, 1, 0, 2)), id="gemm_stride1_dilation2_wide_padding"),
    pytest.param((2, 7, 7, 32, 24, 3, 1, 1, 2, (0, 2, 2, 0)), id="gemm_stride1_groups2_16_in"),
    # The forward GEMM reads x in place for tiles of pixels clear of the padding: in one output row, or
    # across rows for a 1x1 stride-1 kernel; a tile across rows of other layers is packed (no padding here,
    # so only that rule keeps it from reading in place), and so is one whose kernel rows are too short.
    # 17 and 18 outputs per row leave tiles inside rows for every tile height; kernel rows dilation 2 apart,
    # each a run of its own; 134 outputs in several blocks of output channels, the last one partial, which
    # take the task's tiles in turn. (15 input channels keep the 3x3 stride-2 layers off Winograd's way.)
    pytest.param((2, 11, 13, 15, 40, 3, 2, 1, 1, 0), id="gemm_in_place_tiles_across_rows"),
    pytest.param((2, 13, 35, 32, 24, 3, 2, (2, 1), 1, 0), id="gemm_in_place_dilation_y"),
    pytest.param((2, 10, 21, 15, 134, 3, 2, 1, 1, 1), id="gemm_output_blocks"),
    pytest.param((2, 9, 35, 24, 40, 1, 2, 1, 1, 0), id="gemm_in_place_1x1_stride2"),
    pytest.param((2, 7, 5, 24, 40, 1, 1, 1, 1, 0), id="gemm_in_place_1x1_across_rows"),
    pytest.param((1, 9, 12, 5, 40, 3, 1, 1, 1, 0), id="gemm_packed_short_kernel_rows"),
    # dx at strides above 1 with at least 32 input channels per group: stride phases, each a stride-1
    # forward GEMM writing every stride-th pixel. Odd sizes, and padding even across or down (3x3 stride-2
    # layers padded oddly both ways take Winograd's scheme); a kernel narrower than the stride (phases no tap
    # reads, all zeros); strides (1, 2) with two groups and a top padding wider than the kernel (phases whose
    # first line is past line 0); and a single row, where a phase has no lines at all.
    pytest.param((2, 9, 11, 32, 24, 3, 2, 1, 1, (1, 2)), id="dx_phases_3x3_stride2"),
    pytest.param((1, 8, 9, 32, 24, 3, 2, 1, 1, (2, 1)), id="dx_phases_3x3_stride2_even_top"),
    pytest.param((1, 8, 10, 40, 16, 2, 3, 1, 1, 0), id="dx_phases_kernel_below_stride"),
    pytest.param((2, 7, 9, 64, 16, 3, (1, 2), 1, 2, (4, 0, 0, 2)), id="dx_phases_groups_wide_padding"),
    pytest.param((1, 1, 5, 32, 8, 1, 2, 1, 1, 0), id="dx_phases_1x1_one_row"),
    # Strides (2, 3) with a 5x3 kernel; the odd remainder of "same" padding; stride 4 with a 3x3 kernel (zero
    # and computed phases on both axes); padding far wider than the image (a very negative stride-1
    # padding); 33 input channels per group, which no vector width divides; many tasks with tiles read in
    # place from dy; and 4 output channels per group, too few for col2im's GEMM but not for the phases'.
    pytest.param((1, 11, 13, 48, 24, (5, 3), (2, 3), 1, 1, (2, 1, 0, 3)), id="dx_phases_strides_2_3"),
    pytest.param((2, 10, 9, 32, 16, (3, 4), 2, 1, 1, "same"), id="dx_phases_same_padding"),
    pytest.param((1, 9, 3, 32, 8, 3, 4, 1, 1, 1), id="dx_phases_stride4"),
    pytest.param((1, 3, 4, 32, 8, 3, 2, 1, 1, (100, 3, 57, 1)), id="dx_phases_huge_padding"),
    pytest.param((2, 7, 7, 66, 16, 3, 2, 1, 2, 1), id="dx_phases_33_per_group"),
    pytest.param((2, 33, 35, 32, 16, 3, 2, 1, 1, 2), id="dx_phases_many_tasks"),
    pytest.param((2, 9, 8, 32, 4, 3, 2, 1, 1, 1), id="dx_phases_4_outputs"),
    pytest.param((2, 13, 11, 37, 37, 3, 2, 1, 37, 1), id="depthwise37_stride2_pad1"),
    # NCHW depthwise layers copy blocks of channels, whole vectors of them, of about 64 Ki floats into NHWC
    # and run the NHWC kernels there, where the blocks make at least 8 tasks: dW at any stride in blocks of at
    # least 2 vectors, dx at strides above 1 and the forward pass of layers with short rows (so dx at stride
    # 1 too) in blocks of at least one. On AVX2, dW in blocks of 16 and 28 channels (the last with the
    # channels past the last whole vector), and of 16, 16 and 18 in a layer padded on the right and below
    # only; 72 channels in blocks of 16, 16, 16 and 24 on AVX2, and of 32 and 40 on AVX-512, where the
    # others make a single block and too few tasks.
    pytest.param((4, 40, 40, 44, 44, 3, 2, 1, 44, 1), id="depthwise44_nchw_blocks_of_16_28"),
    pytest.param((3, 48, 47, 50, 50, 3, 2, 1, 50, (0, 1, 0, 2)), id="depthwise50_nchw_blocks_of_16_16_18"),
    pytest.param((4, 20, 20, 72, 72, 3, 2, 1, 72, 1), id="depthwise72_nchw_blocks_at_every_width"),
    # The same blocks, whose copies take the two-row sweeps at stride 2 (AVX-512 and NEON), over an odd
    # number of output rows, with left padding wider than the window and a border column on the right.
    pytest.param((4, 21, 23, 72, 72, 3, 2, 1, 72, (0, 2, 3, 1)), id="depthwise72_nchw_blocks_s2_odd_rows"),
    # dW at stride 1 in blocks too: of 16 and 28 channels on AVX2 (one block, too few tasks, on AVX-512: the
    # planes); and a dilated 5x5 kernel over rows too short for the planes, in blocks of 16 and 20 channels
    # on AVX2 and one of all 36 on AVX-512.
    pytest.param((4, 40, 40, 44, 44, 3, 1, 1, 44, 1), id="depthwise44_nchw_blocks_stride1"),
    pytest.param((8, 21, 19, 36, 36, 5, 1, 2, 36, "same"), id="depthwise36_nchw_blocks_5x5_dilation2"),
    # Too few tasks in blocks (2 for dW, 4 for dx): whole copies.
    pytest.param((1, 20, 20, 32, 32, 3, 2, 1, 32, 1), id="depthwise32_nchw_few_blocks"),
    # Padding on the right only and a stride wider than the image: no output column is free of padding.
    pytest.param((1, 3, 1, 32, 32, 3, (1, 4), 1, 32, (0, 0, 0, 2)), id="depthwise32_right_padding_stride4"),
    pytest.param((1, 3, 2, 64, 64, 3, (1, 3), 1, 64, (0, 0, 0, 2)), id="depthwise64_right_padding_stride3"),
    # Padding on the left wider than the row of outputs reaches (9 outputs, the first 10 would be border
    # columns): every column is a border one, and none is written past the row.
    pytest.param((2, 3, 1, 16, 16, 3, 1, 1, 16, (1, 1, 10, 0)), id="depthwise16_left_padding_past_the_row"),
    # 25 taps: sweeps of 3 and 2 taps per kernel row; across groups (2 channels each), sweeps of 9, 9 and 7.
    pytest.param((2, 9, 10, 37, 37, 5, 1, 1, 37, "same"), id="depthwise37_5x5"),
    pytest.param((2, 9, 10, 16, 16, 5, 1, 1, 8, "same"), id="grouped_2_2_5x5"),
    # One tap; across groups, a sweep that repeats it into the 8 unused slots and must drop their sums.
    pytest.param((2, 7, 6, 37, 37, 1, 1, 1, 37, 0), id="depthwise37_1x1"),
    pytest.param((2, 7, 6, 16, 16, 1, 1, 1, 8, 0), id="grouped_2_2_1x1"),
    pytest.param((2, 9, 8, 37, 37, 3, 1, 2, 37, "same"), id="depthwise37_dilation2"),
    # The weight gradient's blocks of 4 and 8 vectors of channels (AVX-512), the last one overlapping the
    # one before; and output rows whose every kernel row reads the top padding, which still add to db.
    pytest.param((2, 5, 6, 70, 70, 3, 1, 1, 70, 1), id="depthwise70_blocks_of_4_vectors"),
    pytest.param((1, 5, 7, 130, 130, 3, 1, 1, 130, 1), id="depthwise130_blocks_of_8_vectors"),
    pytest.param((2, 6, 5, 37, 37, 3, 1, 1, 37, (4, 0, 1, 1)), id="depthwise37_rows_of_padding_only"),
    # The weight gradient's sweeps of two output rows (3x3, AVX-512 and NEON; at stride 2 on AVX-512 only the
    # copied NCHW blocks, above), or of one row in groups of 4 pixels where the pairs do not apply, at each
    # stride: a band of one row at the end (odd rows in bands of 2), and interior pixels that are not a
    # multiple of 4; 33 channels (the last vector overlapping the one before) below 3 rows of top padding,
    # whose first sweeps read only zero rows, and with 3 columns of right padding; a single column, not an
    # interior one; left padding wider than the window (columns before the row); no padding.
    pytest.param((1, 7, 9, 48, 48, 3, 1, 1, 48, 1), id="depthwise48_row_pairs_odd_rows"),
    pytest.param((2, 6, 5, 33, 33, 3, 1, 1, 33, (3, 0, 0, 3)), id="depthwise33_row_pairs_wide_padding"),
    pytest.param((2, 5, 1, 32, 32, 3, 1, 1, 32, 1), id="depthwise32_row_pairs_one_column"),
    pytest.param((1, 4, 12, 40, 40, 3, 1, 1, 40, (0, 2, 4, 0)), id="depthwise40_row_pairs_left_padding"),
    pytest.param((2, 8, 10, 32, 32, 3, 1, 1, 32, 0), id="depthwise32_row_pairs_valid"),
    pytest.param((1, 9, 9, 48, 48, 3, 2, 1, 48, 1), id="depthwise48_row_pairs_s2_odd_rows"),
    pytest.param((2, 8, 7, 33, 33, 3, 2, 1, 33, (3, 0, 0, 3)), id="depthwise33_row_pairs_s2_wide_padding"),
    pytest.param((2, 6, 1, 32, 32, 3, 2, 1, 32, 1), id="depthwise32_row_pairs_s2_one_column"),
    pytest.param((1, 5, 12, 40, 40, 3, 2, 1, 40, (0, 2, 4, 0)), id="depthwise40_row_pairs_s2_left_padding"),
    pytest.param((2, 9, 11, 32, 32, 3, 2, 1, 32, 0), id="depthwise32_row_pairs_s2_valid"),
    # Sweeps of 3 and 1 taps with stride and dilation; a kernel wider than the row (no interior column in
    # any sweep); and bands of rows in one image (of 14 rows at least), the last one partial.
    pytest.param((2, 9, 20, 40, 40, 4, 2, (1, 2), 40, (1, 2, 3, 0)), id="depthwise40_4x4_sweeps_3_1"),
    pytest.param((1, 4, 3, 32, 32, (3, 7), 1, 1, 32, 3), id="depthwise32_kernel_wider_than_row"),
    pytest.param((1, 75, 8, 32, 32, 3, 1, 1, 32, 1), id="depthwise32_bands"),
    # The forward pass's interior columns (four at a time, two vectors of channels at a time; the one
    # vector left of 40 channels on AVX2 and of 48 on AVX-512, below and among the streamed outputs) with
    # stride and dilation, a 10x10 kernel (100 taps), and a kernel of 82 rows, more than the forward pass
    # keeps at hand, that runs scalar code.
    pytest.param((2, 15, 17, 37, 37, 7, 2, 2, 37, 6), id="depthwise37_7x7_stride2_dilation2"),
    pytest.param((1, 12, 12, 16, 16, 10, 1, 1, 16, 0), id="depthwise16_10x10"),
    pytest.param((1, 84, 3, 16, 16, (82, 1), 1, 1, 16, 0), id="depthwise16_82x1_scalar"),
    # dx at strides above 1 gathers each input pixel's readers (a copy per count up to 9, a loop beyond):
    # up to 100 of them with a 19x19 kernel, 1 to 9 with 5x5 at stride 2, none for the pixels a 1x1
    # stride-3 kernel skips, and none at all when every tap reads padding.
    pytest.param((1, 21, 22, 16, 16, 19, 2, 1, 16, 9), id="depthwise16_19x19_stride2"),
    pytest.param((2, 9, 11, 37, 37, 5, 2, 1, 37, 2), id="depthwise37_5x5_stride2"),
    pytest.param((2, 7, 8, 37, 37, 1, 3, 1, 37, 0), id="depthwise37_1x1_stride3_unread_dx"),
    pytest.param((1, 1, 1, 16, 16, 3, 4, 1, 16, 3), id="depthwise16_no_readers"),
    # 2^21 output values: the forward pass streams its stores past the caches; so does dx at stride 2, with
    # 2^21 input values. In NCHW the weight gradient of the 256-channel layers takes blocks of channels
    # (above), that of the 48-channel layer, too few blocks, its planes (below).
    pytest.param((2, 64, 64, 256, 256, 3, 1, 1, 256, "same"), id="depthwise256_streamed_output"),
    # Streamed with 48 channels: three vectors at AVX-512 (a pair and then one), six at AVX2 (three pairs).
    pytest.param((1, 210, 211, 48, 48, 3, 1, 1, 48, "same"), id="depthwise48_streamed_output"),
    pytest.param((2, 64, 64, 256, 256, 3, 2, 1, 256, 1), id="depthwise256_stride2_streamed_dx"),
    # NCHW at stride 1 with at least 2^21 input values: the plane kernel (zero-padded rows, blocks of 8
    # vectors along the output row, then one block of the vectors left), here with rows of 61, 70 and 65
    # outputs (a partial last vector at AVX2 and AVX-512), dilation 2 and asymmetric padding, a 7x7 kernel, a
    # 1x1 kernel; the forward pass also gives dx (their weight gradient takes blocks of channels, above).
    # Small inputs take it too when their output rows are at least 32 values long: 76 outputs are 10 vectors
    # at AVX2 and 5 at AVX-512, the last partial.
    pytest.param((1, 67, 62, 512, 512, 3, 1, 2, 512, (2, 1, 0, 3)), id="depthwise512_planes_dilation2"),
    pytest.param((1, 64, 70, 480, 480, 7, 1, 1, 480, "same"), id="depthwise480_planes_7x7"),
    pytest.param((2, 33, 65, 512, 512, 1, 1, 1, 512, 0), id="depthwise512_planes_1x1"),
    pytest.param((2, 6, 75, 24, 24, 3, 1, 1, 24, (1, 0, 2, 1)), id="depthwise24_planes_long_rows"),
    # The weight gradient in NCHW takes the planes of rows of at least 32 values too where blocks of channels
    # do not (fewer than 2 vectors of channels, or fewer than 8 blocks), one channel through all the images,
    # for kernels of up to 7 columns (above: 3 columns, 76 outputs; here 1 to 7 columns over 137, 70, 38, 37,
    # 40 and 45 outputs, 8 vectors summed at once and a rest; 137 outputs, past 8 whole vectors at AVX-512
    # too, for the single column's sums); 9 columns go through NHWC copies. At the scalar level blocks need 2
    # channels, so the 16-channel layers take them; those of 3 and 6 channels (too few blocks) take the
    # planes at every level.
    pytest.param((2, 4, 137, 16, 16, (3, 1), 1, 1, 16, 0), id="depthwise16_planes_1_column"),
    pytest.param((2, 4, 137, 3, 3, (3, 1), 1, 1, 3, 0), id="depthwise3_planes_1_column"),
    pytest.param((1, 5, 70, 6, 6, (3, 5), 1, 2, 6, "same"), id="depthwise6_planes_5_columns_dilation2"),
    pytest.param((1, 5, 70, 16, 16, (3, 2), 1, 1, 16, "same"), id="depthwise16_planes_2_columns"),
    pytest.param((2, 4, 41, 16, 16, (1, 4), 1, 1, 16, 0), id="depthwise16_planes_4_columns"),
    pytest.param((1, 6, 37, 16, 16, (2, 5), 1, 2, 16, "same"), id="depthwise16_planes_5_columns"),
    pytest.param((1, 5, 40, 16, 16, (3, 6), 1, 1, 16, (1, 1, 3, 2)), id="depthwise16_planes_6_columns"),
    pytest.param((1, 6, 45, 16, 16, (2, 7), 1, 1, 16, "same"), id="depthwise16_planes_7_columns"),
    pytest.param((1, 5, 70, 16, 16, (2, 9), 1, 1, 16, "same"), id="depthwise16_planes_9_columns"),
    # At strides above 1 the forward pass splits each padded row into its stride phases (the weight gradient
    # takes NHWC copies there, and dx gathers in NHWC): 39 outputs at stride 2, 32 at stride 3, dilation 2.
    pytest.param((2, 7, 77, 16, 16, 3, 2, 1, 16, "same"), id="depthwise16_planes_stride2"),
    # Strides 1 down and 3 across a kernel 2 wide: phases that no tap reads.
    pytest.param((1, 6, 100, 16, 16, (2, 2), (1, 3), 1, 16, 0), id="depthwise16_planes_stride1x3"),
    pytest.param(
        (1, 9, 100, 16, 16, (3, 5), 3, 2, 16, (1, 2, 3, 0)), id="depthwise16_planes_stride3_dilation2"
    ),
    # 8 output and 8 input channels per group: the largest groups on the grouped path.
    pytest.param((2, 7, 9, 40, 40, 3, 1, 1, 5, "same"), id="grouped_8_8_per_group"),
    # The weight gradient packs whole blocks of groups (32 at AVX-512, 8 at AVX2 and on NEON, 1 in scalar
    # code) by fixed-size transposes of 1, 2, 4 or 8 channels per group: 32 groups of each count, in and
    # out different; 41 groups, whole blocks and a part at every vector level; 3 channels per group, the
    # general copy.
    pytest.param((2, 7, 6, 64, 128, 3, 1, 1, 32, "same"), id="grouped_whole_blocks_2_in_4_out"),
    pytest.param((1, 6, 5, 256, 256, 3, 2, 1, 32, 1), id="grouped_whole_blocks_8_8_stride2"),
    pytest.param((1, 5, 6, 41, 82, 3, 1, 1, 41, "same"), id="grouped_blocks_and_part_1_in_2_out"),
    pytest.param((1, 5, 6, 96, 96, 3, 1, 1, 32, "same"), id="grouped_whole_blocks_3_3"),
    # 2 output and 3 input channels per group.
    pytest.param((2, 8, 7, 21, 14, 3, 1, 1, 7, (1, 0, 2, 1)), id="grouped_2_out_3_in"),
    # The forward pass and dx of small groups, vectors across groups: 4 + 4 channels per group.
    pytest.param((2, 6, 7, 64, 64, 3, 1, 1, 16, "same"), id="grouped_vectors_4_4"),
    # Groups of 2 + 2 and of 4 + 4 channels start at multiples of their size in every vector: shuffles by
    # masks fixed at compile time; 36 channels leave a partial last block of lanes.
    pytest.param((2, 6, 7, 32, 32, 3, 1, 1, 16, "same"), id="grouped_vectors_aligned_2_2"),
    pytest.param((2, 5, 9, 36, 36, 3, 2, 1, 9, 1), id="grouped_vectors_aligned_4_4_partial_block"),
    # 9 channels: one partial block of lanes, groups straddling the block.
    pytest.param((2, 7, 6, 9, 9, 3, 1, 1, 3, 1), id="grouped_vectors_3_3_partial_block"),
    # 8 input channels per group for 4 output channels: each block's sources span two vectors.
    pytest.param((2, 7, 8, 32, 16, 3, 1, 1, 4, "same"), id="grouped_vectors_two_source_vectors"),
    # 20 channels: the last block's source vectors run past the pixel's channels (a zero-padded copy).
    pytest.param((1, 5, 5, 20, 20, 3, 1, 1, 5, "same"), id="grouped_vectors_padded_sources"),
    # dx gathering output pixels at strides 2 and 3, with dilation and asymmetric padding.
    pytest.param((2, 11, 10, 24, 24, 3, 2, 1, 6, 1), id="grouped_vectors_dx_stride2"),
    pytest.param((2, 13, 12, 12, 18, 3, 3, 2, 6, (2, 1, 0, 3)), id="grouped_vectors_dx_stride3_dilation2"),
    # The weight gradient of 3x3 layers at stride 1 or 2 with 2 or 4 channels in and out per group: the
    # depthwise sweeps of groups of 4 pixels once per channel of a group (2 per group), or the sweeps of
    # outer products over a ring of copied rows of x (4 per group). 2 channels per group at stride 1, and at
    # stride 2 with a partial last block of lanes and padding only at the top and left; 4: over 64 groups
    # at stride 2; 9 groups; on rows of 3 pixels; on a single column; under rows of padding only; at stride
    # 2 with a left padding of 5 columns; with a first pixel that reads the padding alone; in bands of 14 rows
    # (each starting the ring anew), the last of 9; and at stride 2 in bands of 14 and 7 rows, the last over
    # rows of bottom padding, each output row copying two new rows of x.
    pytest.param((2, 6, 11, 16, 16, 3, 1, 1, 8, 1), id="grouped_sweeps_2_2"),
    pytest.param((1, 6, 5, 256, 256, 3, 2, 1, 64, 1), id="grouped_sweeps_4_4_stride2_64_groups"),
    pytest.param((1, 9, 13, 20, 20, 3, 2, 1, 10, (2, 0, 2, 0)), id="grouped_sweeps_2_2_stride2"),
    pytest.param((2, 5, 9, 36, 36, 3, 1, 1, 9, 1), id="grouped_sweeps_4_4_9_groups"),
    pytest.param((2, 5, 3, 24, 24, 3, 1, 1, 6, 1), id="grouped_sweeps_4_4_short_rows"),
    pytest.param((1, 7, 1, 16, 16, 3, 1, 1, 4, 1), id="grouped_sweeps_4_4_one_column"),
    pytest.param((1, 6, 9, 16, 16, 3, 1, 1, 4, (4, 0, 1, 1)), id="grouped_sweeps_4_4_rows_of_padding"),
    pytest.param((2, 5, 17, 16, 16, 3, 2, 1, 4, (1, 1, 5, 0)), id="grouped_sweeps_4_4_stride2_wide_left"),
    pytest.param((1, 5, 4, 16, 16, 3, 1, 1, 4, (1, 1, 7, 0)), id="grouped_sweeps_4_4_group_in_padding"),
    pytest.param((1, 37, 7, 32, 32, 3, 1, 1, 8, 1), id="grouped_sweeps_4_4_bands"),
    pytest.param((1, 41, 9, 32, 32, 3, 2, 1, 8, (1, 2, 0, 1)), id="grouped_sweeps_4_4_s2_bottom_padding"),
    # The same with two vectors of channels on AVX-512 too: 2 per group at stride 1, and at stride 2 with a
    # last block of lanes overlapping the one before; 4 per group on a single column.
    pytest.param((2, 6, 11, 32, 32, 3, 1, 1, 16, 1), id="grouped_sweeps_2_2_32_channels"),
    pytest.param((1, 9, 13, 36, 36, 3, 2, 1, 18, (2, 0, 2, 0)), id="grouped_sweeps_2_2_stride2_36_channels"),
    pytest.param((1, 7, 1, 32, 32, 3, 1, 1, 8, 1), id="grouped_sweeps_4_4_one_column_32_channels"),
    # The same at stride 2, where AVX-512 keeps one column of x in registers from one pixel to the next.
    pytest.param((1, 7, 1, 32, 32, 3, 2, 1, 8, 1), id="grouped_sweeps_4_4_s2_one_column_32_channels"),
    pytest.param((2, 5, 17, 32, 32, 3, 2, 1, 8, (1, 1, 5, 0)), id="grouped_sweeps_4_4_s2_wide_left_32"),
    # dx's stride phases: a 1x1 kernel at stride 2 leaves the odd rows and columns unread (phases with no
    # taps), a 5x5 kernel at strides (1, 3) reads each column by one or two taps.
    pytest.param((2, 9, 9, 16, 16, 1, 2, 1, 4, 0), id="grouped_vectors_dx_1x1_stride2_unread"),
    pytest.param((1, 9, 14, 16, 24, 5, (1, 3), 1, 4, 2), id="grouped_vectors_dx_5x5_strides_1_3"),
    # 6 input and 2 output channels per group: the forward pass's sources span three vectors (direct loops),
    # dx's fit.
    pytest.param((2, 5, 6, 18, 6, 3, 1, 1, 3, "same"), id="grouped_vectors_forward_direct_dx_vectors"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", CONV_PATHS)
def test_convolution_path(geom, layout, rng):
    n, h, w, i, o, k, stride, dilation, groups, padding = geom
    check_conv(ConvCase(rng, n, h, w, i, o, k, stride, dilation, groups, padding), layout)


# accumulate=True where each path handles it differently: the GEMM path adds straight into dW when it has
# one segment and adds the sum of the segments' partials when it has several; the grouped path adds the
# sum of the images' partials.
ACCUMULATE_PATHS = [
    pytest.param((1, 12, 12, 8, 13, 3, 1, 1, 1, "same"), id="gemm_one_segment"),
    pytest.param((2, 40, 40, 8, 8, 3, 1, 1, 1, "same"), id="gemm_pixel_segments"),
    pytest.param((3, 9, 8, 37, 37, 3, 1, 1, 37, "same"), id="depthwise"),
    # In NCHW, rows of 40 values: the planes' sums added to dW and db (4 channels: at every level).
    pytest.param((3, 5, 40, 4, 4, 3, 1, 1, 4, "same"), id="depthwise_planes"),
    # In NCHW at stride 2 and 1, copies of blocks of channels (on AVX2): each image's blocks make its
    # partial, the partials' sum is added.
    pytest.param((4, 20, 20, 32, 32, 3, 2, 1, 32, 1), id="depthwise_nchw_blocks"),
    pytest.param((4, 20, 20, 32, 32, 3, 1, 1, 32, 1), id="depthwise_nchw_blocks_stride1"),
    # In NCHW, 1x1 on planes of 256 pixels: dW^T's sums added to dW, the planes' sums of dy to db.
    pytest.param((2, 16, 16, 13, 20, 1, 1, 1, 1, 0), id="pointwise_nchw"),
    # Winograd's weight gradient: dU summed over the tiles, transformed, then added to dW; or with few tiles,
    # dU's blocks transformed and added to dW, and the chunks' sums of dy added to db.
    pytest.param((2, 31, 29, 24, 70, 3, 1, 1, 1, "same"), id="winograd"),
    pytest.param((2, 9, 9, 130, 140, 3, 1, 1, 1, "same"), id="winograd_few_tiles"),
    pytest.param((2, 7, 9, 40, 40, 3, 1, 1, 5, "same"), id="grouped_8_8"),
    pytest.param((2, 7, 9, 24, 24, 3, 1, 1, 6, "same"), id="grouped_sweeps_4_4"),
    # The in-place path: the bands' partials summed in order, then added (a first layer, and a 3x3 one).
    pytest.param((2, 12, 11, 3, 20, 5, 2, 1, 1, 2), id="first_layer"),
    pytest.param((8, 5, 57, 13, 20, 3, 2, 1, 1, 1), id="in_place_3x3"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", ACCUMULATE_PATHS)
def test_convolution_accumulate(geom, layout, rng):
    n, h, w, i, o, k, stride, dilation, groups, padding = geom
    check_second_backward(
        ConvCase(rng, n, h, w, i, o, k, stride, dilation, groups, padding), layout, rng, True
    )


# (N, H, W, C): planes around the 512-pixel block (1, 511, 512, 513 and 1500 pixels), and NHWC channel
# counts around the 256-channel task (255, 256, 257, 300), also together with a plane over 512 pixels.
NORM_SHAPES = [
    pytest.param((3, 1, 1, 5), id="plane_1"),
    pytest.param((2, 7, 73, 3), id="plane_511"),
    pytest.param((2, 16, 32, 3), id="plane_512"),
    pytest.param((2, 27, 19, 3), id="plane_513"),
    pytest.param((1, 30, 50, 4), id="plane_1500"),
    pytest.param((2, 5, 7, 255), id="channels_255"),
    pytest.param((2, 5, 7, 256), id="channels_256"),
    pytest.param((2, 5, 7, 257), id="channels_257"),
    pytest.param((2, 4, 6, 300), id="channels_300"),
    pytest.param((1, 23, 23, 257), id="plane_529_channels_257"),
]


def norm_inputs(rng, shape):
    """x with a different scale and mean per channel, and gamma, beta and dy."""
    c = shape[-1]
    x = f32(rng.standard_normal(c) + rng.standard_normal(shape) * rng.uniform(0.5, 2.0, c))
    gamma, beta = f32(rng.standard_normal(c)), f32(rng.standard_normal(c))
    return x, gamma, beta, f32(rng.standard_normal(shape))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_instance_norm_path(shape, layout, rng):
    x, gamma, beta, dy = norm_inputs(rng, shape)
    check_norm(x, gamma, beta, 1e-5, dy, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "shape",
    [pytest.param((2, 27, 19, 3), id="plane_513"), pytest.param((2, 5, 7, 300), id="channels_300")],
)
def test_instance_norm_accumulate(shape, layout, rng):
    x, gamma, _, dy = norm_inputs(rng, shape)
    dy2 = f32(rng.standard_normal(shape))
    inorm = gs.InstanceNormalization(shape[-1], gamma=gamma)
    xl = in_layout(x, layout)
    _, state = inorm.forward(xl, layout=layout)
    grad = gs.InstanceNormalizationGradient(inorm)
    grad.backward(in_layout(dy, layout), xl, state)
    dx2 = grad.backward(in_layout(dy2, layout), xl, state, accumulate=True)
    _, dgamma1, dbeta1 = ref.instance_norm_backward(dy, x, gamma, 1e-5)
    dx2_ref, dgamma2, dbeta2 = ref.instance_norm_backward(dy2, x, gamma, 1e-5)
    assert_close(from_layout(dx2, layout), dx2_ref, what="dx")
    assert_close(np.asarray(state.gradient_for_gamma), dgamma1 + dgamma2, what="dgamma")
    assert_close(np.asarray(state.gradient_for_beta), dbeta1 + dbeta2, what="dbeta")
