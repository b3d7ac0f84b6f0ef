"""The GPU-program benchmark's reading of optimised HLO, on hand-written modules."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import gpu_compile  # noqa: E402

HLO = """HloModule m

%body (p: (s32[], f32[64,3,3,32])) -> (s32[], f32[64,3,3,32]) {
  %p = (s32[], f32[64,3,3,32]{3,2,1,0}) parameter(0)
  %f = f32[64,3,3,32]{3,2,1,0} fusion(%p), kind=kLoop, calls=%fused
  %c = f32[19]{0} copy(%f)
  %k = f32[19]{0} conditional(%p, %c, %c), true_computation=%t, false_computation=%e
  ROOT %r = (s32[], f32[64,3,3,32]) tuple(%p, %f)
}

ENTRY %main (a: f32[64,3,3,32]) -> f32[64,3,3,32] {
  %a = f32[64,3,3,32]{3,2,1,0} parameter(0)
  %x = f32[64,3,3,32]{3,2,1,0} copy(%a)
  %y = f32[64,3,3,32]{3,2,1,0} fusion(%x), kind=kLoop, calls=%fused
  %w = (s32[], f32[64,3,3,32]) while(%y), condition=%cond, body=%body
  ROOT %z = f32[64,3,3,32]{3,2,1,0} copy(%y)
}
"""


def test_kernels_of_the_entry_and_of_the_loop_body():
  array = 64 * 3 * 3 * 32 * 4  # bytes of one f32[64,3,3,32]
  kinds, flops, nbytes, largest, io = gpu_compile.kernels_and_convs(HLO)
  assert dict(kinds) == {"copy": 2, "fusion": 1, "loop": 1} and (flops, nbytes) == (0, 0)
  assert largest == 64 * 3 * 3 * 32
  # copy a->x, fusion x->y, while y->(s32, array), copy y->z: each reads and writes
  assert io == 2 * array + 2 * array + (array + 4 + array) + 2 * array
  kinds, _, _, largest, io = gpu_compile.kernels_and_convs(HLO, loop=True)
  assert dict(kinds) == {"fusion": 1, "copy": 1, "conditional": 1} and largest == 19
  # fusion p->f, copy f->c, conditional (p, c, c)->f32[19]
  assert io == (4 + array) + array + (array + 76) + (4 + array + 76 + 76 + 76)


def test_check_names_a_second_conditional_and_a_large_copy():
  row = dict(card="h100", model="resnet8", variant="v", program="loop")
  ok = dict(row, kinds={"conditional": 1}, largest_copy_elements=19)
  bad = dict(row, kinds={"conditional": 2}, largest_copy_elements=18432)
  assert gpu_compile.check([ok]) == []
  problems = gpu_compile.check([bad])
  assert len(problems) == 2
  assert "2 conditionals" in problems[0] and "18,432 elements" in problems[1]


def test_check_wants_a_cohort_to_keep_its_conditional_and_copy_no_kernel_nor_activation():
  row = dict(card="h100", model="resnet8", variant="v", program="loop", cohort=2)
  ok = dict(row, kinds={"conditional": 1}, largest_copy_elements=2 * 4096, backward_filter_convs=7)
  lost = dict(ok, kinds={"fusion": 3})
  kernels = dict(ok, largest_copy_elements=2 * 3 * 3 * 64 * 64)
  regrouped = dict(ok, backward_filter_convs=0)
  assert gpu_compile.check([ok]) == []
  assert gpu_compile.check([lost]) == [
    "h100 resnet8 v (loop, cohort of 2): 0 conditionals, 1 expected"
  ]
  assert gpu_compile.check([kernels]) == [
    "h100 resnet8 v (loop, cohort of 2): copies an array of 73,728 elements (at most 8,192 "
    "expected)"
  ]
  assert gpu_compile.check([regrouped]) == [
    "h100 resnet8 v (loop, cohort of 2): no cuDNN backward-filter convolution (kernel "
    "gradients regrouped)"
  ]


def test_largest_cohort_extends_the_planned_memory_of_the_two_largest():
  def row(k, mib):  # arguments, outputs and temporaries of a cohort of k, in MiB
    return dict(cohort=k, argument_bytes=mib * 2**20, output_bytes=0, temp_bytes=0)

  # 100 MiB shared and 50 MiB per run; 80 % of the H100's 80 GB is 61,035 MiB:
  # (61,035.16 - 100) / 50 = 1218.7
  text = gpu_compile.largest_cohort("h100", [row(1, 150), row(8, 500), row(16, 900)])
  assert text.startswith("largest K that fits: 1218 (50 MiB per run and 100 MiB shared")
  assert "one cohort size" in gpu_compile.largest_cohort("h100", [row(1, 150)])


def test_a_familys_cost_is_its_epochs_times_the_roofline_of_an_epoch():
  row = dict(model="resnet18", dtype="bfloat16", batch=128, card="h100", roofline_seconds=1e-3)
  row["variant"] = "intelligent G′, tracked, CIFAR-10"
  # 155 runs of 150 epochs = 23,250; branched at most 51 + 155 * 99 = 15,396 epochs; an
  # epoch is 50,000 // 128 = 390 steps of 1 ms: 0.1083 h, so 2.5 h plain and 1.7 h branched.
  line = gpu_compile.cost_markdown([row]).splitlines()[-1]
  assert line == "| resnet18 | CIFAR-10 | 155 | 23,250 / 15,396 | h100 | 2.5 / 1.7 / — |"
  # In cohorts of 2 at 2.5 ms a step (1.25 ms per run): 15,396 * 390 * 1.25 ms = 2.08 h.
  cohort = dict(row, cohort=2, roofline_seconds=2.5e-3, program="loop")
  line = gpu_compile.cost_markdown([row], [cohort]).splitlines()[-1]
  assert line.endswith("| h100 | 2.5 / 1.7 / 2.1 (K = 2) |")
