#!/usr/bin/env python3
"""Writes the named seed and regression cases of tests/fuzz/corpus/{data,ckpt,cli}.

The data and checkpoint harnesses read their inputs as a stream of choices
(fuzz_common.h); this script encodes descriptions in the same order as the
decoders in fuzz_data.c (decode) and fuzz_ckpt.c (LLVMFuzzerTestOneInput and
apply_edits), so that each case keeps a readable name. Cases that fuzzing
finds are added beside these under their libFuzzer names. Run from anywhere:
    /usr/bin/python3 tests/fuzz/make_corpus.py
To see how a harness decodes a case: MPIVAE_FUZZ_VERBOSE=1 BUILD/tests/fuzz_data_replay --one FILE
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u64(v):
    return list(struct.pack("<Q", v & (2**64 - 1)))


# ---- fuzz_data.c ----

OBJ = dict(dataset=0, group=1, soft=2, dangling=3, external=4, hard=5, virtual=6, type=7, none=8)
PATH = {"FILE": 0, "FILE:/train/images": 1, "FILE:/x": 2, "FILE:/a/b/c": 3, "FILE:/": 4}
TYPE = dict(u8=0, i8=1, u16=2, i32be=3, f16=4, f32=5, f64=6, f32be=7, compound=8, str=9, vstr=10, enum=11,
            array=12, bitfield=13, u64=14)
LAYOUT = dict(chunked=0, contiguous=1, compact=2, chunked_unlimited=3)
FILL = dict(default=0, value=1, never=2, early=3)
WRITTEN = dict(all=0, none=1, first_row=2, first_chunk=3, last_row=4, first_last=5)
VALUES = [0.0, 1.0, 0.5, 255.0, 128.0, -5.0, "nan", "inf", "-inf", 1e300, -1e300, 1e-310, 3.5e38, 65504.0, 2.0, 1e-3]
SMALL = [1, 2, 3, 4, 8, 16, 28, 0, 255, 300]
IDX = dict(first=0, last=1, middle=2, one=4)


def enc_dim(n):
    if n in SMALL:
        return [SMALL.index(n)]
    if n == 2**31:
        return [10]
    if 2**32 <= n < 2**32 + 256:
        return [11, n - 2**32]
    if n == 2**33:
        return [12]
    if n == 2**62:
        return [13]
    return [15] + u64(n)


def enc_chunk(n, c):
    if c == min(n, 16):
        return [0]
    if c == 1:
        return [1]
    if c == n:
        return [2]
    if c == min(n, 256):
        return [3]
    assert 1 <= c <= 256, c
    return [4, c - 1]


def data_case(dims, type="u8", obj="dataset", path="FILE", layout="chunked", chunk=None, filters=0, fill="default",
              fillv=0.0, written="all", vals=(0.0, 1.0), attr=0, read="stream", max_rows=4, idx=("first", "last")):
    b = [OBJ[obj], PATH[path], len(dims)]
    for n in dims:
        b += enc_dim(n)
    b += [TYPE[type], LAYOUT[layout]]
    chunk = chunk or [min(n, 16) or 1 for n in dims]
    for n, c in zip(dims, chunk):
        b += enc_chunk(n, c)
    b += [filters, FILL[fill], VALUES.index(fillv), WRITTEN[written], len(vals) - 1]
    b += [VALUES.index(v) for v in vals]
    b += [attr, dict(stream=0, memory=1, auto=2)[read], max_rows - 1, len(idx) - 1]
    for i in idx:
        if isinstance(i, int):
            b += [3] + u64(i)
        else:
            b += [IDX[i]]
    return bytes(b)


DATA = {
    # What the tests and `mpivae data synth` make: uint8 images, chunked and deflated.
    "seed-synth-u8-40x1x16x16": data_case([40, 1, 16, 16], chunk=[16, 1, 16, 16], filters=1, vals=(0.0, 255.0, 128.0),
                                         read="memory"),
    "seed-fashion-u8-40x28x28": data_case([40, 28, 28], chunk=[16, 28, 28], filters=1, vals=(0.0, 255.0), read="auto"),
    "seed-f32-300x64-contiguous": data_case([300, 64], type="f32", layout="contiguous", vals=(0.5, 0.0, 1.0),
                                           idx=("first", "last", "middle")),
    "seed-f64-16x3x8x8-mse": data_case([16, 3, 8, 8], type="f64", vals=(-5.0, 2.0, 0.5), read="memory", max_rows=8,
                                       idx=("first", "one", "first", "last")),
    "seed-u8-path-x": data_case([8, 8, 8], path="FILE:/x", vals=(255.0,)),
    # The hostile cases.
    "hostile-u8-300x2p32+256-chunked": data_case([300, 2**32 + 256], chunk=[16, 256], written="first_chunk",
                                                 idx=("first", "last", "middle")),
    "hostile-u8-2p31x1x16x16-one-chunk-no-fill": data_case([2**31, 1, 16, 16], chunk=[16, 1, 16, 16],
                                                           written="first_chunk", vals=(255.0, 0.0),
                                                           idx=("first", "last", "middle", 12345678)),
    "hostile-f16-20x1x8x8": data_case([20, 1, 8, 8], type="f16", vals=(0.5, 65504.0)),
    "hostile-f64-1e300": data_case([10, 16], type="f64", vals=(1e300, 0.5), read="memory"),
    "hostile-f64-1e300-stream": data_case([10, 16], type="f64", vals=(-1e300,), read="stream"),
    "hostile-u8-200x2p33": data_case([200, 2**33], chunk=[16, 256], written="none"),
    "hostile-u8-200x2p33-2": data_case([200, 2, 2**32 + 3], chunk=[16, 1, 256], written="first_chunk"),
    "hostile-f32-nan": data_case([12, 4, 4], type="f32", vals=(0.5, "nan"), read="auto"),
    "hostile-f32-inf-stream": data_case([12, 16], type="f32", vals=("inf", 0.5)),
    "hostile-f32-minus5-unit-range": data_case([12, 16], type="f32", vals=(-5.0, 0.5), read="memory"),
    "hostile-f32be": data_case([12, 16], type="f32be", vals=(0.5, 1.0)),
    "hostile-i8": data_case([12, 16], type="i8", vals=(-5.0, 1.0)),
    "hostile-u16": data_case([12, 16], type="u16", vals=(255.0,)),
    "hostile-i32be": data_case([12, 16], type="i32be", vals=(255.0,)),
    "hostile-u64": data_case([12, 16], type="u64", vals=(1.0,)),
    "hostile-compound": data_case([12, 16], type="compound"),
    "hostile-string": data_case([12, 16], type="str"),
    "hostile-vlen-string": data_case([12, 16], type="vstr"),
    "hostile-enum": data_case([12, 16], type="enum"),
    "hostile-array": data_case([12, 16], type="array"),
    "hostile-bitfield": data_case([12, 16], type="bitfield"),
    "hostile-rank0-scalar": data_case([], layout="contiguous"),
    "hostile-rank1": data_case([300]),
    "hostile-rank5": data_case([4, 1, 2, 8, 8]),
    "hostile-rank6": data_case([2, 1, 1, 2, 8, 8]),
    "hostile-0-rows": data_case([0, 16]),
    "hostile-0-rows-3d": data_case([0, 28, 28], layout="contiguous"),
    "hostile-0-columns": data_case([10, 0, 16]),
    "hostile-1-row-huge-chunk": data_case([1, 4096, 4096], type="f32", chunk=[1, 256, 256], written="first_chunk"),
    "hostile-check-buffer-2x1000x1000": data_case([2, 1000, 1000], type="f32", layout="contiguous", written="none",
                                                  idx=("first",)),
    "hostile-row-1e8-values": data_case([3, 10000, 10000], chunk=[1, 256, 256], written="first_chunk",
                                        idx=("last",), max_rows=1),
    "hostile-row-over-1e8-values": data_case([3, 10001, 10000], chunk=[1, 256, 256], written="none"),
    "hostile-2p62-rows": data_case([2**62, 4], chunk=[16, 4], written="none", idx=("last",)),
    "hostile-2p63-rows": data_case([2**63, 4], chunk=[16, 4], written="none", idx=("last",)),
    "hostile-2p64-2-rows": data_case([2**64 - 2, 4], chunk=[16, 4], written="none", idx=("last", "middle")),
    "hostile-rows-times-row-over-int64": data_case([2**40, 2**24], chunk=[1, 256], written="none", idx=("last",)),
    "hostile-int-wrap-2p31x2p31": data_case([2, 2**31, 2], chunk=[1, 256, 2], written="none"),
    "hostile-group": data_case([10, 16], obj="group"),
    "hostile-soft-link": data_case([10, 16], obj="soft", vals=(0.5,)),
    "hostile-dangling-link": data_case([10, 16], obj="dangling"),
    "hostile-external-link-missing": data_case([10, 16], obj="external"),
    "hostile-hard-link": data_case([10, 16], obj="hard", vals=(0.5,)),
    "hostile-virtual-missing-source": data_case([10, 1, 4, 4], obj="virtual", type="f32"),
    "hostile-virtual-missing-source-u8": data_case([2**31, 16], obj="virtual", idx=("last",)),
    "hostile-committed-type": data_case([10, 16], obj="type"),
    "hostile-nothing": data_case([10, 16], obj="none"),
    "hostile-root-group": data_case([10, 16], path="FILE:/"),
    "hostile-nested-path": data_case([10, 16], path="FILE:/a/b/c"),
    "hostile-fill-value-nan": data_case([40, 16], type="f32", fill="value", fillv="nan", written="first_row"),
    "hostile-fill-time-never": data_case([40, 16], type="f32", fill="never", written="first_row", idx=("last",)),
    "hostile-early-alloc": data_case([40, 16], fill="early", written="none"),
    "hostile-unlimited-rows": data_case([40, 16], layout="chunked_unlimited"),
    "hostile-fletcher32-deflate-shuffle": data_case([40, 16], filters=7),
    "hostile-compact": data_case([40, 16], layout="compact"),
    "hostile-contiguous-unwritten-2p31": data_case([2**31, 16], layout="contiguous", written="none", idx=("last",)),
    "hostile-denormal": data_case([10, 16], type="f32", vals=(1e-310, 3.5e38)),
}


# ---- fuzz_ckpt.c ----

NAMES = ["format", "format_version", "version", "step", "epoch", "epoch_step", "adam_t", "skips", "world_size",
         "data_rows", "cfg.model", "model", "hidden", "latent", "loss", "input_shape", "cfg.data", "cfg.test_data",
         "cfg.data_abs", "cfg.test_data_abs", "cfg.out", "beta", "cfg.warmup", "cfg.capacity_max",
         "cfg.capacity_steps", "cfg.epochs", "cfg.batch", "cfg.lr", "cfg.beta1", "cfg.beta2", "cfg.adam_eps", "seed",
         "cfg.log_every", "cfg.eval_every", "cfg.sample_every", "cfg.ckpt_every", "cfg.keep", "cfg.max_skips",
         "cfg.in_memory", "cfg.max_steps"]
INTS = [0, 1, -1, 2, 3, 8, 2**31 - 1, 2**31, 2**32 + 20, 2**63 - 1, -2**63, 65536, 65537, 4096, 4097, 512,
        16777217, 1000001, -5]
REALS = [0.0, 1.0, -1.0, 0.5, 1e300, -1e300, "nan", "inf", "-inf", 4294967316.0, 0.999999, 1e-8, 11.0, 1000001.0,
         2.5, 9.3e18]
STRINGS = ["mpivae-checkpoint", "mlp", "conv", "nonsense", "bce", "mse", "", "data/x.h5:/train/images",
           "/nonexistent/x.h5", ":/", "hvae", "5000 x"]
INT_TYPES = dict(i64=0, i32=1, u64=2, i8=3)
REAL_TYPES = dict(f64=4, f32=5)
GROUPS = {"/params": 0, "/optimizer/m": 1, "/optimizer/v": 2}
TVALUES = [0.0, 0.25, -0.5, "nan", "inf", "-inf", 1e300, -5.0, 1e-45, 3.5e38]
N_TENSORS = [10, 14, 14]  # mlp 64-8-2, conv 4,8 on 1x8x8, mlp 48-8-4-3
TENSORS0 = ["fc1.weight", "fc1.bias", "fc21.weight", "fc22.weight", "fc21.bias", "fc22.bias", "fc3.weight",
            "fc3.bias", "fc4.weight", "fc4.bias"]


def num(name, values, type="i64", shape="scalar"):
    """Edit: the attribute name set to values (a list when shape is 'list')."""
    t = INT_TYPES.get(type, REAL_TYPES.get(type))
    values = values if isinstance(values, list) else [values]
    b = [1, NAMES.index(name), t]
    if shape == "scalar":
        b += [0]
    elif shape == "one":
        b += [1]
    elif shape == "list":
        b += [2, len(values) - 1]
    else:
        b += [3]
        values = []
    for v in values:
        table = INTS if t < 4 else REALS
        if v in table and not (isinstance(v, float) and t < 4):
            b += [table.index(v)]
        elif t < 4:
            b += [len(INTS)] + u64(v)
        else:
            b += [len(REALS)] + list(struct.pack("<d", v))
    return b


def string(name, s, kind=0):
    return [2, NAMES.index(name), STRINGS.index(s), kind]


def delete_attr(name):
    return [0, NAMES.index(name)]


def tensor_op(op, group, tensor, base=0):
    ti = N_TENSORS[base] if tensor is None else TENSORS0.index(tensor) if isinstance(tensor, str) else tensor
    return [op, GROUPS[group], ti]


def replace(group, tensor, shape=0, type=0, layout=2, vals=(0.25,), base=0):
    return tensor_op(4, group, tensor, base) + [shape, type, layout, len(vals) - 1] + [TVALUES.index(v) for v in vals]


def ckpt_case(*edits, base=0, name="same", batch=1):
    b = [base, dict(same=0, next=1, past_long_max=2, minus5=3)[name], batch - 1]
    for e in edits:
        b += e
    return bytes(b)


F32, F64, F16, I32, U8, COMPOUND, STRING, VSTRING = range(8)
CKPT = {
    "seed-mlp-64-8-2": ckpt_case(),
    "seed-conv-4-8": ckpt_case(base=1),
    "seed-mlp-48-8-4-3": ckpt_case(base=2, batch=4),
    "hostile-compound-tensor": ckpt_case(replace("/params", "fc1.weight", type=COMPOUND)),
    "hostile-string-tensor": ckpt_case(replace("/params", "fc1.bias", type=STRING)),
    "hostile-vlen-string-tensor": ckpt_case(replace("/params", "fc4.bias", type=VSTRING, layout=0)),
    "hostile-float16-tensor": ckpt_case(replace("/params", "fc3.weight", type=F16)),
    "hostile-float64-1e300-tensor": ckpt_case(replace("/params", "fc3.weight", type=F64, vals=(1e300,))),
    "hostile-int32-tensor": ckpt_case(replace("/params", "fc3.bias", type=I32, vals=(-5.0,))),
    "hostile-transposed-tensor": ckpt_case(replace("/params", "fc1.weight", shape=1)),
    "hostile-longer-tensor": ckpt_case(replace("/params", "fc1.bias", shape=2)),
    "hostile-extra-dim-tensor": ckpt_case(replace("/params", "fc1.weight", shape=3)),
    "hostile-2p31-rows-tensor": ckpt_case(replace("/params", "fc1.weight", shape=4, layout=1)),
    "hostile-scalar-tensor": ckpt_case(replace("/params", "fc4.bias", shape=5, layout=0)),
    "hostile-nan-in-params": ckpt_case(replace("/params", "fc4.bias", vals=("nan",))),
    "hostile-inf-in-optimizer-m": ckpt_case(replace("/optimizer/m", "fc21.weight", vals=("inf", 0.25))),
    "hostile-nan-in-optimizer-v": ckpt_case(replace("/optimizer/v", "fc1.weight", vals=("nan",))),
    "hostile-negative-optimizer-v": ckpt_case(replace("/optimizer/v", "fc1.bias", vals=(-0.5,))),
    "hostile-missing-optimizer": ckpt_case(tensor_op(3, "/optimizer/v", None)),
    "hostile-missing-optimizer-tensor": ckpt_case(tensor_op(3, "/optimizer/m", "fc22.bias")),
    "hostile-missing-params": ckpt_case(tensor_op(3, "/params", None)),
    "hostile-tensor-is-group": ckpt_case(tensor_op(5, "/params", "fc1.weight") + [0]),
    "hostile-tensor-dangling-link": ckpt_case(tensor_op(5, "/params", "fc1.weight") + [1]),
    "hostile-tensor-external-link": ckpt_case(tensor_op(5, "/optimizer/m", "fc1.bias") + [2]),
    "hostile-flipped-byte-params": ckpt_case(tensor_op(6, "/params", "fc1.weight") + [17, 0]),
    "hostile-latent-2p32+20": ckpt_case(num("latent", 2**32 + 20)),
    "hostile-latent-1e300": ckpt_case(num("latent", 1e300, type="f64")),
    "hostile-latent-2.5": ckpt_case(num("latent", 2.5, type="f64")),
    "hostile-latent-nan": ckpt_case(num("latent", "nan", type="f64")),
    "hostile-latent-minus1": ckpt_case(num("latent", -1)),
    "hostile-input-shape-1x512x512": ckpt_case(num("input_shape", [1, 512, 512], type="i32", shape="list")),
    "hostile-input-shape-1x65536x65536": ckpt_case(num("input_shape", [1, 65536, 65536], type="i32", shape="list")),
    "hostile-input-shape-0": ckpt_case(num("input_shape", [1, 0, 8], type="i32", shape="list")),
    "hostile-input-shape-2-values": ckpt_case(num("input_shape", [8, 8], type="i32", shape="list")),
    "hostile-input-shape-2p32+20": ckpt_case(num("input_shape", [1, 8, 2**32 + 20], shape="list")),
    "hostile-hidden-9-values": ckpt_case(num("hidden", [8] * 9, type="i32", shape="list")),
    "hostile-hidden-65537": ckpt_case(num("hidden", [65537], type="i32", shape="list")),
    "hostile-hidden-2p32+20": ckpt_case(num("hidden", [2**32 + 20], shape="list")),
    "hostile-hidden-string": ckpt_case(string("hidden", "nonsense")),
    "hostile-hidden-empty": ckpt_case(num("hidden", [], shape="empty")),
    "hostile-model-nonsense": ckpt_case(string("model", "nonsense")),
    "hostile-model-hvae": ckpt_case(string("model", "hvae")),
    "hostile-model-vlen-conv": ckpt_case(string("model", "conv", kind=1)),
    "hostile-model-number": ckpt_case(num("model", 3)),
    "hostile-loss-nonsense": ckpt_case(string("loss", "nonsense")),
    "hostile-loss-empty": ckpt_case(string("loss", "")),
    "hostile-format-nonsense": ckpt_case(string("format", "nonsense")),
    "hostile-format-version-2": ckpt_case(num("format_version", 2)),
    "hostile-format-version-1.5": ckpt_case(num("format_version", 1.5, type="f64")),
    "hostile-world-size-0": ckpt_case(num("world_size", 0)),
    "hostile-world-size-2p32+1": ckpt_case(num("world_size", 2**32 + 1)),
    "hostile-step-minus5": ckpt_case(num("step", -5), name="minus5"),
    "hostile-step-not-the-name": ckpt_case(name="next"),
    "hostile-step-name-past-long-max": ckpt_case(name="past_long_max"),
    "hostile-step-2p63-1": ckpt_case(num("step", 2**63 - 1)),
    "hostile-epoch-step-minus1": ckpt_case(num("epoch_step", -1)),
    "hostile-data-rows-minus1": ckpt_case(num("data_rows", -1)),
    "hostile-cfg-beta-minus1": ckpt_case(num("beta", -1.0, type="f64")),
    "hostile-cfg-lr-nan": ckpt_case(num("cfg.lr", "nan", type="f64")),
    "hostile-cfg-lr-inf": ckpt_case(num("cfg.lr", "inf", type="f64")),
    "hostile-cfg-adam-beta1-1.0": ckpt_case(num("cfg.beta1", 1.0, type="f64")),
    "hostile-cfg-adam-beta2-1.0": ckpt_case(num("cfg.beta2", 1.0, type="f64")),
    "hostile-cfg-adam-eps-minus1": ckpt_case(num("cfg.adam_eps", -1.0, type="f64")),
    "hostile-cfg-epochs-minus5": ckpt_case(num("cfg.epochs", -5)),
    "hostile-cfg-epochs-2p32+20": ckpt_case(num("cfg.epochs", 2**32 + 20)),
    "hostile-cfg-batch-0": ckpt_case(num("cfg.batch", 0)),
    "hostile-cfg-batch-2p32+1": ckpt_case(num("cfg.batch", 2**32 + 20)),
    "hostile-cfg-batch-16777217": ckpt_case(num("cfg.batch", 16777217)),
    "hostile-cfg-keep-0": ckpt_case(num("cfg.keep", 0)),
    "hostile-cfg-max-skips-minus1": ckpt_case(num("cfg.max_skips", -1)),
    "hostile-cfg-in-memory-8": ckpt_case(num("cfg.in_memory", 8)),
    "hostile-cfg-warmup-minus1": ckpt_case(num("cfg.warmup", -1)),
    "hostile-cfg-capacity-max-nan": ckpt_case(num("cfg.capacity_max", "nan", type="f64")),
    "hostile-cfg-capacity-max-1e300": ckpt_case(num("cfg.capacity_max", 1e300, type="f64")),
    "hostile-cfg-log-every-minus1": ckpt_case(num("cfg.log_every", -1)),
    "hostile-cfg-max-steps-minus5": ckpt_case(num("cfg.max_steps", -5)),
    "hostile-seed-minus1": ckpt_case(num("seed", -1)),
    "hostile-cfg-data-5000-chars": ckpt_case(string("cfg.data", "5000 x")),
    "hostile-cfg-data-empty": ckpt_case(string("cfg.data", "")),
    "hostile-cfg-test-data-missing": ckpt_case(delete_attr("cfg.test_data")),
    "hostile-cfg-data-abs-only": ckpt_case(delete_attr("cfg.test_data_abs")),
    "hostile-no-latent": ckpt_case(delete_attr("latent")),
    "hostile-latent-int8": ckpt_case(num("latent", 2, type="i8")),
    "hostile-latent-u64-from-minus1": ckpt_case(num("latent", -1, type="u64")),
    "hostile-latent-two-values": ckpt_case(num("latent", [2, 2], shape="list")),
    "hostile-conv-input-shape-8x2p31-1": ckpt_case(num("input_shape", [1, 8, 2**31 - 1], type="i32", shape="list"),
                                              base=1),
    "hostile-conv-hidden-65536": ckpt_case(num("hidden", [65536, 65536], type="i32", shape="list"), base=1),
    "hostile-directory-as-checkpoint": ckpt_case([7, 2, 0]),
    "hostile-truncated-half": ckpt_case([7, 0, 128]),
    "hostile-empty-file": ckpt_case([7, 1, 0]),
    "hostile-dangling-symlink": ckpt_case([7, 3, 0]),
}


# ---- fuzz_cli.c: arguments separated by newlines ----

LONG_OUT = "x" * 1100
CLI = {
    "seed-version": ["--version"],
    "seed-help": ["--help"],
    "seed-no-command": [],
    "seed-data-synth": ["data", "synth", "--out", "s.h5", "--height", "8", "--width", "8", "--n-train", "200"],
    "seed-data-info": ["data", "info", "s.h5"],
    "seed-data-fashion": ["data", "fashion-mnist", "--out", "data/fashion-mnist.h5"],
    "seed-train": ["train", "--data", "s.h5", "--hidden", "8", "--latent", "2", "--steps", "1", "--out", "run",
                   "--batch", "32", "--epochs", "1", "--log-every", "1"],
    "seed-train-conv": ["train", "--data", "s.h5:/train/images", "--model", "conv", "--hidden", "8,16", "--loss", "mse",
                        "--beta", "4", "--warmup", "100", "--capacity", "25:1000", "--allreduce", "overlap",
                        "--data-in-memory", "no", "--test-data", "none"],
    "seed-train-resume": ["train", "--resume", "auto", "--out", "run", "--ckpt-every", "10", "--keep", "2"],
    "seed-train-adam": ["train", "--lr", "3e-4", "--adam-beta1", "0.5", "--adam-beta2", "0.99", "--adam-eps", "1e-6",
                        "--seed", "7", "--max-skips", "0", "--eval-every", "5", "--sample-every", "5"],
    "seed-eval": ["eval", "--ckpt", "run", "--data", "s.h5", "--mean", "--limit", "100", "--batch", "64", "--seed", "2"],
    "seed-sample": ["sample", "--ckpt", "c.h5", "--out", "s.png", "--n", "16", "--temperature", "0.5", "--cols", "4"],
    "seed-reconstruct": ["reconstruct", "--ckpt", "c.h5", "--out", "r.png", "--data", "s.h5", "--n", "8",
                         "--first", "3", "--cols", "4"],
    "seed-interpolate": ["interpolate", "--ckpt", "c.h5", "--from", "0", "--to", "1", "--out", "i.png", "--steps",
                         "5", "--spherical"],
    "seed-traverse": ["traverse", "--ckpt", "c.h5", "--out", "t.png", "--dims", "0,1", "--range", "-3:3",
                      "--steps", "5", "--data", "s.h5", "--index", "2", "--top", "4"],
    "seed-anomaly": ["anomaly", "--ckpt", "c.h5", "--out", "a.h5", "--labels", "s.h5", "--normal-classes", "0,1",
                     "--top", "8"],
    "seed-encode": ["encode", "--ckpt", "c.h5", "--out", "z.h5", "--data", "s.h5"],
    "hostile-stray-train": ["train", "--data", "s.h5", "stray.h5"],
    "hostile-stray-eval": ["eval", "--ckpt", "a.h5", "b.h5"],
    "hostile-stray-after-dashes": ["sample", "--ckpt", "c.h5", "--out", "s.png", "--", "x"],
    "hostile-stray-reconstruct": ["reconstruct", "--ckpt", "c.h5", "--out", "r.png", "extra"],
    "hostile-stray-encode": ["encode", "extra", "--ckpt", "c.h5", "--out", "z.h5"],
    "hostile-hidden-empty-size": ["train", "--hidden", "400,,400"],
    "hostile-hidden-trailing-comma": ["train", "--hidden=400,"],
    "hostile-hidden-leading-comma": ["train", "--hidden", ",400"],
    "hostile-hidden-empty": ["train", "--hidden", ""],
    "hostile-hidden-9-sizes": ["train", "--hidden", "1,2,3,4,5,6,7,8,9"],
    "hostile-hidden-300-chars": ["train", "--hidden", ",".join(["400"] * 75)],
    "hostile-reconstruct-first-near-long-max": ["reconstruct", "--ckpt", "c.h5", "--out", "r.png", "--first",
                                                "9223372036854775800"],
    "hostile-train-out-1100-chars": ["train", "--out", LONG_OUT],
    "hostile-sample-out-1100-chars": ["sample", "--ckpt", "c.h5", "--out", LONG_OUT + ".png"],
    "hostile-train-data-colon-slash": ["train", "--data", ":/x"],
    "hostile-eval-data-colon-slash": ["eval", "--ckpt", "c.h5", "--data", ":/x"],
    "hostile-train-test-data-colon-slash": ["train", "--test-data", ":/x"],
    "hostile-train-data-1100-chars": ["train", "--data", LONG_OUT],
    "hostile-capacity-long": ["train", "--capacity", "1" * 100 + ":5"],
    "hostile-capacity-no-colon": ["train", "--capacity", "5"],
    "hostile-lr-nan": ["train", "--lr", "nan"],
    "hostile-lr-1e400": ["train", "--lr", "1e400"],
    "hostile-batch-huge": ["train", "--batch", "99999999999999999999"],
    "hostile-short-option-cluster": ["train", "-abc"],
    "hostile-short-option-cluster-then-eval": ["eval", "-hx", "--ckpt", "c.h5"],
    "hostile-ambiguous-prefix": ["train", "--h", "8"],
    "hostile-prefix": ["train", "--hid", "8", "--lat", "2"],
    "hostile-missing-value": ["train", "--hidden"],
    "hostile-dashes-only": ["train", "--"],
    "hostile-unknown-command": ["nonsense"],
    "hostile-data-no-tool": ["data"],
    "hostile-data-unknown-tool": ["data", "nonsense"],
    "hostile-data-info-no-file": ["data", "info"],
    "hostile-data-synth-stray": ["data", "synth", "--out", "s.h5", "extra"],
    "hostile-out-empty": ["sample", "--ckpt", "c.h5", "--out", ""],
    "hostile-out-only-suffix": ["sample", "--ckpt", "c.h5", "--out", "dir/.png"],
    "hostile-anomaly-labels-without-classes": ["anomaly", "--ckpt", "c.h5", "--out", "a.h5", "--labels", "s.h5"],
    "hostile-normal-classes-empty-item": ["anomaly", "--ckpt", "c.h5", "--out", "a.h5", "--normal-classes", "0,,1"],
    "hostile-range-reversed": ["traverse", "--ckpt", "c.h5", "--out", "t.png", "--range", "3:-3"],
    "hostile-dims-huge": ["traverse", "--ckpt", "c.h5", "--out", "t.png", "--dims", "99999999999"],
    "hostile-interpolate-from-negative": ["interpolate", "--ckpt", "c.h5", "--from", "-1", "--to", "1",
                                          "--out", "i.png"],
    "hostile-64-arguments": ["train"] + ["--seed", "1"] * 40,
}


def main():
    for target, cases in (("data", DATA), ("ckpt", CKPT), ("cli", CLI)):
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for name, case in cases.items():
            data = "\n".join(case).encode() if target == "cli" else case
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{folder}: {len(cases)} named cases")


if __name__ == "__main__":
    main()
