"""Compile every fused kernel for Hopper without a GPU: each ``gpugrad/kernels/*.cu`` with ``nvcc -arch=sm_90``
(skipped when nvcc is not on PATH), and every Numba kernel of ``gpugrad/kernels/*.py`` to PTX for compute
capability 9.0 through Numba's real CUDA compiler (skipped when Numba cannot find NVVM). Also checks
that float32/float16 kernels contain no float64 arithmetic and no local-memory spills."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CU_FILES = sorted(glob.glob(os.path.join(ROOT, "gpugrad", "kernels", "*.cu")))
OWN_NO_SPILL = ("fused.cu",)  # memory-bound kernels that must not spill registers


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("src", CU_FILES, ids=[os.path.basename(p) for p in CU_FILES])
def test_cu_file_compiles_for_sm90(src, tmp_path):
    own = os.path.basename(src) in OWN_NO_SPILL
    out = tmp_path / (os.path.basename(src) + (".o" if own else ".ptx"))
    # our own kernels go through ptxas too (register spills are errors); others to PTX only (faster)
    cmd = ["nvcc", "-arch=sm_90", "-c", src, "-o", str(out), "-Xptxas", "-warn-spills"] if own else \
        ["nvcc", "-arch=sm_90", "--ptx", src, "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.stat().st_size > 0
    if own:
        assert "spill" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


def test_there_are_cu_files():
    assert any(p.endswith("fused.cu") for p in CU_FILES)


# Runs in its own process: it stands in a fake "current device" (cc 9.0) for Numba's device-function
# compiler, which would otherwise ask the (absent) driver.
_PTX_SCRIPT = r"""
import sys
import numpy as np
import numba
from numba import types
from numba import cuda
try:
    import numba.cuda.dispatcher as D
    class _Dev:
        compute_capability = (9, 0)
    D.get_current_device = lambda: _Dev()
except Exception as e:
    print("SKIP cannot stand in a device:", e); sys.exit(3)
def _trivial(a):
    a[0] = 1.0
try:  # can Numba compile CUDA at all here (NVVM, libdevice)? If not, skip rather than fail.
    cuda.compile_ptx(_trivial, (types.float32[::1],), cc=(9, 0))
except Exception as e:
    print("SKIP Numba cannot compile CUDA on this machine:", type(e).__name__, str(e)[:300]); sys.exit(3)
sys.path.insert(0, sys.argv[1])
from gpugrad.kernels import act_bias_grad as abg, bias_act as ba, optim_codegen as cg, optim_step as opt, softmax_xent as sx
from gpugrad.kernels.optim_rules import RULES
from gpugrad.kernels._numba import compute_dtype
from gpugrad.kernels.activations import NPARAMS

def A(t, nd):
    return types.Array(t, nd, "C")


def without_trig_reduction(ptx):
    # libdevice's sin/cos (the sin activation) reduce huge arguments (float: |x| > 105615) with Payne-Hanek:
    # a small local table (__cudart_i2opi_f, _d for double) and, in float, one float64 multiply by
    # pi * 2**-64. That cold path is the library's and allowed; other local memory or float64 arithmetic fails.
    if "__cudart_i2opi_" not in ptx:
        return ptx
    keep = []
    for line in ptx.splitlines():
        t = line.strip()
        if (t.startswith((".local .align 4 .b8", ".local .align 8 .b8", "st.local.u32", "ld.local.u32",
                          "st.local.u64", "ld.local.u64")) or
                ("__cudart_i2opi_f" in ptx and (t.startswith((".reg .f64", "cvt.rn.f64.s64", "cvt.rn.f32.f64")) or
                                                (t.startswith("mul.f64") and t.endswith("0d3BF921FB54442D19;"))))):
            continue
        keep.append(line)
    return "\n".join(keep)

failed = []
for name in ("float32", "float64", "float16"):
    dt = numba.from_dtype(np.dtype(name))
    cdt = compute_dtype(name)
    c = numba.from_dtype(cdt)
    i64, b = types.int64, types.boolean
    prm = types.UniTuple(c, NPARAMS)  # the activation parameters
    jobs = [
        ("bias_act", ba._bias_act_kernel(cdt), (A(dt, 2), A(dt, 1), A(dt, 2), b, b, i64, prm)),
        ("act_bwd", ba._act_bwd_kernel(cdt), (A(dt, 2), A(dt, 2), A(dt, 2), i64, i64, prm)),
        ("act_bias_grad", abg._grad_kernel(cdt, 32, 8), (A(dt, 2), A(dt, 2), A(dt, 2), A(c, 2), i64, b, b, i64, i64,
                                                         prm)),
        ("colsum", abg._colsum_kernel(cdt), (A(c, 2), A(dt, 1))),
        ("softmax_xent_fwd", sx._fwd_kernel(cdt, 128), (A(dt, 2), A(i64, 1), A(dt, 1), A(dt, 2), i64, A(i64, 1), i64)),
        ("softmax_xent_bwd", sx._bwd_kernel(cdt), (A(dt, 2), A(i64, 1), A(dt, 1), i64, c, i64, c, c, A(dt, 2))),
    ]
    for r in RULES.values():  # the generated optimizer kernels, every state present, both variants
        mask = (True,) * len(r.state)
        for cap in (False, True):
            scal = (A(c, 1), A(numba.float32, 1)) if cap else (c,) * len(r.derived)
            nh = len(r.hyper) + len(cg.host_scalars(r))  # hyperparameters, then the host-computed scalars
            sig = (A(dt, 1),) * (2 + len(r.state)) + (i64, i64) + (c,) * nh + scal + (b,) * len(r.flags)
            jobs.append((r.name + ("_cap" if cap else ""), opt.numba_kernel(r, mask, cdt, cap), sig))
    for kname, k, sig in jobs:
        try:
            ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
        except Exception as e:
            failed.append(f"{kname}[{name}]: {type(e).__name__}: {str(e)[:500]}")
            continue
        ptx = without_trig_reduction(ptx)
        if name != "float64" and ".f64" in ptx:
            failed.append(f"{kname}[{name}]: float64 arithmetic in a float32 kernel")
        if ".local" in ptx:
            failed.append(f"{kname}[{name}]: uses local memory")
        print("OK", kname, name, len(ptx))
if failed:
    print("\n".join(failed)); sys.exit(1)
print("JOBS", 3 * len(jobs))
"""


def test_numba_kernels_compile_to_ptx_for_sm90():
    pytest.importorskip("numba")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, ROOT], capture_output=True, text=True, env=env,
                          timeout=600)
    out = proc.stdout + proc.stderr
    if proc.returncode == 3:
        pytest.skip(out.strip().splitlines()[-1])
    assert proc.returncode == 0, out[-6000:]
    from gpugrad.kernels.optim_rules import RULES
    jobs = int(out.split("JOBS ")[1].split()[0])  # 3 dtypes x (6 fused kernels + 2 variants per optimizer rule)
    assert jobs == 3 * (6 + 2 * len(RULES)) and out.count("OK ") == jobs, out[-3000:]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_generated_optimizer_cuda_c_compiles_for_sm90(tmp_path):
    """The CUDA C generated from gpugrad/kernels/optim_rules.py (every rule, state mask, variant and dtype): no
    register spills, and no float64 arithmetic in the float32/float16 entry points."""
    sys.path.insert(0, ROOT)
    from gpugrad.kernels import optim_codegen as cg
    from tests.support import optim_examples as ox
    from gpugrad.kernels.optim_rules import RULES
    for r in RULES.values():
        src = tmp_path / f"{r.name}.cu"
        src.write_text(cg.cuda_c_source(r, ox.masks(r)))
        keep = tmp_path / r.name
        keep.mkdir()
        obj = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(src), "-o", str(keep / "x.o"), "--keep", "--keep-dir",
                              str(keep), "-Xptxas", "-warn-spills"], capture_output=True, text=True, timeout=600)
        assert obj.returncode == 0 and "spill" not in (obj.stdout + obj.stderr).lower(), obj.stdout + obj.stderr
        ptx = "".join(f.read_text() for f in keep.glob("*.ptx"))
        assert ".entry" in ptx
        for chunk in re.split(r"\.(?=entry\s|func\s)", ptx)[1:]:
            if not chunk.startswith("entry"):
                continue  # a helper function (the f64 entries' pow)
            name = chunk[len("entry"):].split("(")[0].strip()
            if not name.endswith("_f64"):
                assert not re.search(r"\w\.f64\b", chunk), f"float64 arithmetic in {name}"


# The generated activation header, compiled by nvcc for sm_90 (device code) and run on the host (its
# functions are __host__ __device__): every activation, in double and float, forward and every derivative
# order the kernels compute, against the definition.
_ACT_PROGRAM = r"""
#include <cstdio>
#include <cmath>
#include "activations.cuh"

template <typename C>
__global__ void act_kernel(const C* v, const C* dy, C* y, C* dz, int n, int code, int order, GG_ACT_PARAMS(C)) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] = gg_act::act_fwd<C>(v[i], code, GG_ACT_ARGS);
        dz[i] = gg_act::act_deriv<C>(dy[i], v[i], code, order, GG_ACT_ARGS);
    }
}
template __global__ void act_kernel<float>(const float*, const float*, float*, float*, int, int, int,
                                           GG_ACT_PARAMS(float));
template __global__ void act_kernel<double>(const double*, const double*, double*, double*, int, int, int,
                                            GG_ACT_PARAMS(double));

static const double V[] = {@V@};
static const double DY[] = {@DY@};
static const double PARAMS[][@NP@] = {@PARAMS@};
static const int CODES[] = {@CODES@};
static const int ORDERS[] = {@ORDERS@};

int main() {
    const int n = sizeof(V) / sizeof(V[0]);
    for (int c = 0; c < (int)(sizeof(CODES) / sizeof(CODES[0])); ++c)
        for (int order : ORDERS)
            for (int i = 0; i < n; ++i) {
                const int code = CODES[c];
                const double* p = PARAMS[c];
                std::printf("%d %d %d %d %a %a %a %a %a %a\n", c, code, order, i,
                            gg_act::mlp_act_fwd<double>(V[i], code), gg_act::mlp_act_bwd<double>(DY[i], V[i], code),
                            gg_act::act_fwd<double>(V[i], code, @PD@),
                            gg_act::act_deriv<double>(DY[i], V[i], code, order, @PD@),
                            (double)gg_act::act_fwd<float>((float)V[i], code, @PF@),
                            (double)gg_act::act_deriv<float>((float)DY[i], (float)V[i], code, order, @PF@));
            }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_generated_cuda_c_agrees_with_the_definition(tmp_path):
    sys.path.insert(0, ROOT)
    from gpugrad.kernels import activations as A
    from gpugrad.kernels import expr as E
    v = [0.0, -0.0, 1e-30, -1e-30, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 7.0, -7.0, 30.0, -30.0, 100.0, -100.0]
    dy = [1.0, -0.5, 2.0, 0.25] * 4 + [1.5, -1.0]
    cases = [(a, A.kernel_params(a)) for a in A.ACTIVATIONS] + [
        ("leaky_relu", A.kernel_params("leaky_relu", 0.3)), ("leaky_relu", A.kernel_params("leaky_relu", -0.3)),
        ("softplus", A.kernel_params("softplus", (2.0, 3.0))), ("hardtanh", A.kernel_params("hardtanh", (-0.5, 2.0)))]
    pd = ", ".join(f"p[{i}]" for i in range(A.NPARAMS))
    pf = ", ".join(f"(float)p[{i}]" for i in range(A.NPARAMS))
    src = (_ACT_PROGRAM.replace("@V@", ", ".join(map(repr, v))).replace("@DY@", ", ".join(map(repr, dy)))
           .replace("@NP@", str(A.NPARAMS))
           .replace("@PARAMS@", ", ".join("{" + ", ".join(map(repr, p)) + "}" for _, p in cases))
           .replace("@CODES@", ", ".join(str(A.CODES[a]) for a, _ in cases))
           .replace("@ORDERS@", ", ".join(map(str, A.KERNEL_ORDERS))).replace("@PD@", pd).replace("@PF@", pf))
    (tmp_path / "act_test.cu").write_text(src)
    exe = tmp_path / "act_test"
    proc = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-I", os.path.join(ROOT, "gpugrad", "kernels"),
                           str(tmp_path / "act_test.cu"), "-o", str(exe)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    assert len(rows) == len(cases) * len(A.KERNEL_ORDERS) * len(v)
    for c, code, order, i, mf, mb, f64, b64, f32, b32 in rows:
        (name, prm), order, i = cases[int(c)], int(order), int(i)
        assert A.CODES[name] == int(code)
        env = {f"p{j}": p for j, p in enumerate(prm)}
        want_f = E.evaluate(A.trees(name)[0], dict(env, z=v[i]))
        bwd = A.backward_tree(name, order, A.saves(name, prm))
        want_b = E.evaluate(bwd, dict(env, dy=dy[i], s=v[i]))
        where = f"{name}{prm} order={order} v={v[i]}"
        assert float.fromhex(f64) == pytest.approx(want_f, rel=1e-15, abs=1e-300), where
        assert float.fromhex(b64) == pytest.approx(want_b, rel=1e-15 if order == 1 else 1e-13, abs=1e-300), where
        with np.errstate(over="ignore"):  # beyond float's range the float32 code gives inf, as it should
            want_f32, want_b32 = float(np.float32(want_f)), float(np.float32(want_b))
        assert float.fromhex(f32) == pytest.approx(want_f32, rel=1e-6, abs=1e-6), where
        assert float.fromhex(b32) == pytest.approx(want_b32, rel=1e-6 if order == 1 else 1e-5, abs=1e-6), where
        if name in A.FUSED_MLP and order == 1:  # the fused MLP's switch: the same forward, dy * (derivative at dy = 1)
            assert float.fromhex(mf) == float.fromhex(f64), where
            factor = E.evaluate(A.trees(name)[1], dict(env, dy=1.0, s=v[i]))
            assert float.fromhex(mb) == pytest.approx(dy[i] * factor, rel=1e-15, abs=1e-300), where
