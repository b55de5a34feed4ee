"""The ``seenn`` command line: the argument parser: every command and flag, with its documented bound."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .args import ALL_RULES, DATASET_NAMES, REAL_RULES, _audit_args, _data_args, _dataset_name, _n, _x


def _run_parser(sub, name: str, help: str, *, split: str = "test", rules=REAL_RULES, batch_size: int | None = 500,
                limit: int | None = None, json_flag: bool = True, precision: bool = False):
    """A sub-command that evaluates a run on a dataset split: the arguments they all share."""
    p = sub.add_parser(name, help=help)
    p.add_argument("run", help="a run directory or the name of a shipped run")
    p.add_argument("--dataset", help="default: the run's dataset")
    p.add_argument("--split", default=split, choices=["train", "val", "test"])
    if rules:
        p.add_argument("--exit", default="confidence", choices=rules)
        p.add_argument("--threshold", type=float, help="exit threshold in [0, 1] (default: the run's calibrated "
                                                       "threshold, else 0.9)")
        p.add_argument("--timesteps", type=_n("timesteps"), help="steps for --exit fixed")
        p.add_argument("--policy", help="policy folder or shipped policy name for --exit policy / learned")
    p.add_argument("--max-timesteps", type=_n("timesteps"), help="default: the run's T (at most 1024)")
    p.add_argument("--limit", type=_n("samples"), default=limit, help="only the first N samples of the split")
    if batch_size:
        p.add_argument("--batch-size", type=_n("batch_size"), default=batch_size)
    p.add_argument("--device", default="cpu")
    if precision:
        p.add_argument("--precision", choices=["fp32", "bf16", "int8"],
                       help="the convolutions that read spikes in fp32, bf16 or int8 (membranes, stem and logits stay "
                            "fp32; default: the precision the run's threshold was certified for, else fp32)")
    if json_flag:
        p.add_argument("--json", action="store_true")
    _data_args(p)
    return p


class _Parser(argparse.ArgumentParser):
    """Argument mistakes are user mistakes too: one line, exit code 2 (through SeennError), no usage dump."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="seenn", description="Spiking neural networks with temporal early exit (SEENN).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a spiking network directly (BPTT, TET loss)")
    t.add_argument("--dataset", default="fashion-mnist", type=_dataset_name,
                   help="fashion-mnist, mnist, cifar10, cifar100, imagefolder:PATH (one folder per class) or "
                        "events:PATH (event recordings, Train/CLASS/ and Test/CLASS/; --timesteps frames each)")
    t.add_argument("--image-size", type=_n("image_size"), help="imagefolder: the square size images are resized to "
                                                               "(default 32)")
    t.add_argument("--frames-by", choices=["time", "count"], default="time",
                   help="events: cut each recording into --timesteps frames of equal time (default) or equal event "
                        "counts")
    t.add_argument("--recipe", choices=["fast"],
                   help="start from a named set of training settings, each still overridable by its own flag: fast "
                        "= the CIFAR-10 speed-record recipe (airbench network, whitening, decoupled Nesterov SGD "
                        "at batch 1024, warm-up and linear decay, lookahead, alternating flip; 10 epochs)")
    t.add_argument("--model", help="convnet (28x28, the default), vgg, resnet19, resnet20 or airbench (32x32)")
    t.add_argument("--width", type=_x(0, 16, open_lo=True), default=1.0, help="channel width multiplier, in (0, 16]")
    t.add_argument("--timesteps", type=_n("timesteps"), default=4, help="timesteps T used in training (1 to 1024)")
    t.add_argument("--epochs", type=_n("epochs"), help="default 10; with --resume: a new length for the run (more or "
                                                      "fewer epochs; the learning rate from then on is the "
                                                      "schedule's of a run of that length)")
    t.add_argument("--batch-size", type=_n("batch_size"), help="default 64")
    t.add_argument("--lr", type=float, help="default 0.1 (with --decoupled: per 1024 examples)")
    t.add_argument("--momentum", type=_x(0, 1), help="SGD momentum in [0, 1), default 0.9")
    t.add_argument("--weight-decay", type=_x(0, 1), help="default 5e-4 (with --decoupled: per 1024 examples)")
    _bool = dict(action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--nesterov", **_bool, help="Nesterov momentum")
    t.add_argument("--decoupled", **_bool, help="learning rate and weight decay per 1024 examples, decoupled from "
                                               "each other and from the momentum (seenn.training.recipe.param_groups)")
    t.add_argument("--bias-lr", type=float, metavar="X", help="batch norm biases learn X times faster (decoupled)")
    t.add_argument("--head-scale", type=float, metavar="S", help="the readout trained as if multiplied by S "
                                                                 "(decoupled)")
    t.add_argument("--frozen-bn-scale", **_bool, help="batch norm's scale stays 1")
    t.add_argument("--bn-momentum", type=float, help="weight of a new batch in BN's running statistics, default 0.1")
    t.add_argument("--schedule", choices=["cosine", "linear"], help="cosine (default) or linear: warm-up from 0.2 "
                                                                    "then linear decay")
    t.add_argument("--warmup", type=float, metavar="FRACTION", help="share of the steps spent warming up")
    t.add_argument("--final-lr", type=float, metavar="FACTOR", help="the schedule's last factor, default 0")
    t.add_argument("--label-smoothing", type=float, help="default 0")
    t.add_argument("--whiten", **_bool, help="first layer set from training-image patches and frozen (airbench)")
    t.add_argument("--whiten-bias-epochs", type=_n("epochs", 0), help="epochs the whitening bias trains, default 3")
    t.add_argument("--whiten-eps", type=_x(0, 100, open_lo=True), metavar="EPS",
                   help="added to each patch eigenvalue before whitening, in (0, 100], default 5e-4; larger damps the "
                        "fine patterns JPEG compression destroys")
    t.add_argument("--dirac", **_bool, help="3x3 convolutions start as identities")
    t.add_argument("--lookahead", **_bool, help="lookahead weight averaging")
    t.add_argument("--bn-reestimate", type=_n("repeats", 0), metavar="BATCHES",
                   help="re-estimate batch norm's statistics on this many training batches before each validation "
                        "(default 0; also with --resume: evaluation only, the weights' path is unchanged)")
    t.add_argument("--translate", type=int, metavar="PIXELS", help="augmentation shift, 0 to 8, default 4")
    t.add_argument("--translate-padding", choices=["zeros", "reflect"], help="borders of a shifted image")
    t.add_argument("--flip", choices=["random", "alternate"], help="mirror at random (default) or in alternate "
                                                                   "epochs")
    t.add_argument("--loss", default="tet", choices=["tet", "mean-ce"])
    t.add_argument("--tet-lambda", type=float, default=1e-3)
    t.add_argument("--tet-phi", type=float, default=1.0)
    t.add_argument("--surrogate", default="tanh", choices=["tanh", "triangle", "rectangle"])
    t.add_argument("--seed", type=_n("seed", 0), default=0)
    t.add_argument("--limit", type=_n("samples"), help="train on the first N training samples only")
    t.add_argument("--val-size", type=_n("samples", 0), default=5000, help="training samples held out for validation")
    t.add_argument("--no-augment", action="store_true", help="no random crop / flip (32x32 only)")
    t.add_argument("--jpeg", type=_x(0, 1), metavar="P",
                   help="re-encode each training image as JPEG with probability P, quality drawn in [40, 95] "
                        "(robustness to compression artifacts)")
    t.add_argument("--compile", **_bool,
                   help="torch.compile the neurons' BPTT loops: faster training after a one-off compile")
    t.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="bf16: convolutions and linear layers under bf16 autocast (membranes, BN and the loss stay "
                        "fp32); fast only where the CPU has bf16 arithmetic (AVX512-BF16 / AMX) or on a GPU. auto: "
                        "bf16 there, fp32 elsewhere (the run records which). Default: fp32; auto with --recipe fast")
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--out", help="run directory to write")
    t.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its own settings are used)")
    t.add_argument("--init", metavar="RUN", help="start from this run's weights (fine-tuning; same model and width; an ANN run starts a "
                        "LIF network, a converted run is fine-tuned as it is: its layers, IF neurons and horizon)")
    t.add_argument("--exit-aware", type=float, default=0.0, metavar="W",
                   help="weight in [0, 1] of the exit-aware loss (accumulated-logit cross-entropy weighted toward "
                        "early steps); with --init: exit-aware fine-tuning")
    t.add_argument("--distill", metavar="RUN", help="knowledge distillation: also match this run's softened outputs "
                   "at every step (usually the QCFS ANN given to --init; seenn.training.distill)")
    t.add_argument("--distill-weight", type=_x(0, 1), metavar="A",
                   help="the distillation term's weight in [0, 1], default 0.5 (the own loss gets 1 - A)")
    t.add_argument("--distill-temperature", type=_x(0, 100, open_lo=True), metavar="TAU",
                   help="softmax temperature of the distillation term, in (0, 100], default 4")
    t.add_argument("--distill-flip", action="store_true", default=None,
                   help="the teacher sees each image and its mirror and gives their averaged logits (a stronger "
                        "teacher for one more teacher pass a batch)")
    t.add_argument("--ann", action="store_true",
                   help="train an ANN with QCFS activations instead (convnet, vgg, resnet19, resnet20), to turn into an SNN with "
                        "seenn convert")
    t.add_argument("--quant-levels", type=_n("quant_levels"), default=8, metavar="L", help="QCFS quantization levels (with --ann)")
    t.add_argument("--clip-init", type=float, default=2.0, metavar="LAM",
                   help="QCFS initial clip value (with --ann; learned from there)")
    _data_args(t)
    t.set_defaults(func="train:cmd_train")

    e = _run_parser(sub, "eval", "evaluate a run with temporal early exit", rules=ALL_RULES, precision=True)
    e.add_argument("--sweep", action="store_true", help="also sweep a grid of thresholds")
    e.add_argument("--dump", help="write per-sample arrays to this .npz file")
    _audit_args(e)
    e.set_defaults(func="evaluate:cmd_eval")

    sv = sub.add_parser("serve", help="an HTTP inference service with early exit and a live audit of its exits")
    sv.add_argument("run", help="a run directory or the name of a shipped run")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_n("port", 0), default=8000)
    sv.add_argument("--exit", default="confidence", choices=["confidence", "entropy", "fixed", "learned"])
    sv.add_argument("--threshold", type=float, help="default: the run's calibrated threshold, else 0.9")
    sv.add_argument("--timesteps", type=_n("timesteps"), help="steps for --exit fixed")
    sv.add_argument("--policy", help="learned exit rule folder for --exit learned")
    sv.add_argument("--max-timesteps", type=_n("timesteps"), help="default: the run's T")
    sv.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    sv.add_argument("--max-batch", type=_n("batch_size"), default=64, help="samples stepped together at most")
    sv.add_argument("--max-queue", type=_n("samples"), default=256,
                    help="requests waiting to join the batch at most; beyond it 503 with Retry-After")
    sv.add_argument("--max-body", type=_n("samples"), default=8 * 1024 * 1024, help="bytes of one request body")
    sv.add_argument("--on-alarm", choices=["report", "full-t"], default="report",
                    help="full-t: stop exiting early once the audit raises its alarm, until POST /v1/audit/reset")
    sv.add_argument("--seed", type=_n("seed", 0), default=0, help="which requests are audited")
    sv.add_argument("--threads", type=_n("threads"), default=1,
                    help="PyTorch threads of the model (default 1: at the small batches a service steps, more threads "
                         "spin-wait on the cores the HTTP side needs)")
    _audit_args(sv, default=0.03)
    sv.set_defaults(func="evaluate:cmd_serve")

    b = _run_parser(sub, "bench", "time early exit against full T (same samples, side by side)", batch_size=256,
                    limit=4096, precision=True)
    b.add_argument("--repeats", type=_n("repeats"), default=3)
    b.add_argument("--latency-samples", type=_n("samples"), default=100)
    b.add_argument("--compile", action="store_true",
                   help="batch-1 paths (early exit and every full-T path alike) through torch.compile")
    b.set_defaults(func="evaluate:cmd_bench")

    c = _run_parser(sub, "calibrate", "choose the exit threshold with a statistical guarantee", split="val",
                    rules=None, batch_size=None, precision=True)
    c.add_argument("--max-accuracy-drop", type=_x(0, 1, True, True), default=0.005, help="e.g. 0.005 = half a point")
    c.add_argument("--confidence-level", type=_x(0, 1, True, True), default=0.95)
    c.add_argument("--per-step", action="store_true", help="one threshold per timestep")
    c.add_argument("--allow-no-early-exit", action="store_true",
                   help="when no threshold can be certified, store 'never exit early' even over a working threshold")
    c.add_argument("--temperature", action="store_true", help="fit a softmax temperature first")
    c.add_argument("--out", help="write a calibrated copy of the run here instead of updating it")
    c.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    c.set_defaults(func="analysis:cmd_calibrate")

    r = _run_parser(sub, "robustness", "early exit under corrupted inputs (distribution shift)")
    r.add_argument("--corruption", default="gaussian-noise",
                   choices=["gaussian-noise", "blur", "contrast", "jpeg-compression", "jpeg"],
                   help="jpeg-compression: the same images recompressed at quality 80 / 65 / 58 / 50 / 40 (severity "
                        "1..5); jpeg: the JPEG part of the CIFAR-10 test batch against its exact part (other images)")
    r.add_argument("--severity", default="1..5", help="1..5, 3 or 1,3,5")
    r.add_argument("--seed", type=_n("seed", 0), default=0)
    r.set_defaults(func="analysis:cmd_robustness")

    x = _run_parser(sub, "explain", "why one sample exited when it did", batch_size=None)
    x.add_argument("--index", type=int, required=True)
    x.add_argument("--png", metavar="FILE", help="event runs: draw the frames the sample read before it left")
    x.set_defaults(func="analysis:cmd_explain")

    rp = _run_parser(sub, "report", "write an HTML report with plots", json_flag=False)
    rp.add_argument("--out", required=True, help="folder for index.html and its PNG plots")
    rp.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    rp.add_argument("--policies", nargs="*", help="policy folders to plot beside the threshold sweeps")
    rp.set_defaults(func="analysis:cmd_report")

    en = _run_parser(sub, "energy", "synaptic operations and energy per sample under early exit", rules=ALL_RULES)
    en.add_argument("--pj-per-ac", type=float, default=0.9, help="picojoules per accumulate (45 nm: 0.9)")
    en.add_argument("--pj-per-mac", type=float, default=4.6, help="picojoules per multiply-accumulate (45 nm: 4.6)")
    en.set_defaults(func="analysis:cmd_energy")

    ex = sub.add_parser("export", help="write a run as a NIR graph, or as a run folder with smaller weights")
    ex.add_argument("run")
    ex.add_argument("--format", default="nir", help="nir (default), or run: a copy of the run folder with its "
                                                    "weights stored as --weights")
    ex.add_argument("--weights", default=None, choices=["fp32", "fp16", "int8"],
                    help="with --format run: fp16 (default; half the bytes) or int8 (each convolution and linear "
                         "weight as int8 with a scale per output channel: a quarter); both load as fp32")
    ex.add_argument("--out", required=True)
    ex.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    ex.add_argument("--exit", default="confidence", choices=["confidence", "entropy", "fixed"])
    ex.add_argument("--threshold", type=float, help="stored in the graph's metadata (default: the run's own)")
    ex.add_argument("--timesteps", type=_n("timesteps"))
    ex.add_argument("--dt", type=_x(0, 1e6, open_lo=True),
                    help="the time step the graph's time constants are written for (default: the one the --for "
                         "importer assumes: 1 for nir, 1e-4 for snntorch and spikingjelly, 1e-3 for norse)")
    ex.add_argument("--for", dest="peer", default="nir", choices=["nir", "norse", "snntorch", "spikingjelly"],
                    help="the importer that will read the file: norse also gets LIF thresholds in units of r = 1 "
                         "and average pools as convolutions, which is all its from_nir maps (the same network)")
    ex.set_defaults(func="interop:cmd_export")

    im = sub.add_parser("import", help="turn a NIR graph (snnTorch, Norse, SpikingJelly, seenn) into a seenn run")
    im.add_argument("file")
    im.add_argument("--out", required=True, help="run directory to write")
    im.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    im.add_argument("--dataset", required=True, type=_dataset_name,
                    help="the data pipeline (normalisation) the graph was trained with")
    im.add_argument("--timesteps", type=_n("timesteps"), help="max timesteps (default: the graph's metadata, else 4)")
    im.add_argument("--dt", type=_x(0, 1e6, open_lo=True),
                    help="the time step the graph's time constants assume (default: its metadata, else 1)")
    im.add_argument("--discretisation", default="euler", choices=["euler", "exp"],
                    help="forward Euler (snnTorch, SpikingJelly) or exact exponential decay (sinabs, Norse-style)")
    im.set_defaults(func="interop:cmd_import")

    cv = sub.add_parser("convert", help="turn an ANN into an SNN run (IF neurons): a QCFS ANN run (seenn train "
                                        "--ann), or your own ANN (--network FILE)")
    cv.add_argument("run", nargs="?", help="the ANN run directory (or give --network)")
    cv.add_argument("--network", metavar="FILE",
                    help="your own ANN instead of a run: a Python file whose factory function builds it (ReLU or "
                         "QCFS activations, average pooling, residual adds: traced from its forward), run once here")
    cv.add_argument("--factory", default="build", help="with --network: the function that returns the ANN")
    cv.add_argument("--weights", help="with --network: its trained weights (.safetensors, or a state_dict saved "
                                      "with torch.save, read with weights_only=True)")
    cv.add_argument("--dataset", type=_dataset_name,
                    help="with --network: the images it classifies (calibration images come from its training "
                         "split)")
    cv.add_argument("--input-scale", default="normalized", choices=["normalized", "unit"],
                    help="with --network: what the ANN was trained on (see seenn adapt --help); recorded in the run")
    cv.add_argument("--mean", type=float, nargs="+", help="with --network: custom input (x / 255 - mean) / std")
    cv.add_argument("--std", type=float, nargs="+", help="with --network: with --mean")
    cv.add_argument("--val-size", type=_n("samples", 0), default=5000,
                    help="with --network: the last training images held out as the run's validation split (for "
                         "calibrate; calibration images for the conversion come from the rest; default 5000)")
    cv.add_argument("--percentile", type=_x(0, 100, open_lo=True), default=99.9,
                    help="with --network: a ReLU's threshold is this percentile of its activations on the "
                         "calibration images (default 99.9)")
    cv.add_argument("--out", required=True, help="SNN run directory to write")
    cv.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    cv.add_argument("--timesteps", type=_n("timesteps"), default=64, help="max timesteps of the SNN run")
    cv.add_argument("--bias-correction", type=_n("timesteps"), metavar="STEPS",
                    help="correct each layer's bias so that its mean output over steps 1..STEPS matches the ANN "
                         "(calibration images from the training split; better early steps, so earlier exits)")
    cv.add_argument("--potential-correction", action="store_true",
                    help="with --bias-correction: fit each channel's output over those steps as rate x t + offset; "
                         "the rate's error goes into the bias, the offset into the neuron's initial potential "
                         "(better first steps without losing the late ones)")
    cv.add_argument("--calibration-samples", type=_n("samples"), default=256,
                    help="training images for --bias-correction (default 256)")
    cv.add_argument("--seed", type=_n("seed", 0), default=0, help="which calibration images are drawn")
    _data_args(cv)
    cv.set_defaults(func="interop:cmd_convert")

    ad = sub.add_parser("adapt", help="early exit for a SpikingJelly / snnTorch / Norse network: a run folder that "
                                      "steps it live")
    ad.add_argument("network", help="a Python file whose factory function builds the network")
    ad.add_argument("--factory", default="build", help="the function in that file that returns the network")
    ad.add_argument("--weights", help="its trained weights: .safetensors, or a state_dict saved with torch.save "
                                      "(read with weights_only=True)")
    ad.add_argument("--step", metavar="NAME",
                    help="for a network whose forward is not one step (an snnTorch tutorial's forward loops over "
                         "num_steps): a method of the network, or a function step(net, x, state) -> (out, state) in "
                         "the file, that takes one step (state None at rest); implies the explicit adapter")
    ad.add_argument("--framework", choices=["spikingjelly", "snntorch", "norse", "explicit"],
                    help="default: detected from the network's neurons; explicit: forward(x, state) -> (out, state)")
    ad.add_argument("--output", type=int, default=None, choices=range(-8, 8), metavar="K",
                    help="which element of a tuple the network returns holds the class scores (required when it "
                         "returns a tuple: snnTorch's (spk, mem) is 0 for spike counts, 1 for the membrane)")
    ad.add_argument("--readout", default="sum", choices=["sum", "max", "last", "mean"],
                    help="how the steps' outputs become class scores: sum (default; SEENN-I's summed logits), max "
                         "(running maximum over steps, Norse's usual decoder), last (the latest step's output), mean "
                         "(the sum over t: same ranking as sum, a flatter softmax); the runner still sums, each step "
                         "giving the readout's change")
    ad.add_argument("--dataset", required=True, type=_dataset_name,
                    help="the images the network classifies (their classes, size and channels)")
    ad.add_argument("--input-scale", default="normalized", choices=["normalized", "unit"],
                    help="what the network was trained on: normalized (default), (x / 255 - mean) / std with the "
                         "dataset's constants (seenn's pipeline: `seenn datasets` lists them); unit, x / 255 in [0, 1] "
                         "(SpikingJelly's and snnTorch's tutorials: ToTensor without Normalize). Recorded in the run "
                         "and printed by eval; adapt warns when the other scale scores far better")
    ad.add_argument("--mean", type=float, nargs="+", help="custom input: (x / 255 - mean) / std, one per channel")
    ad.add_argument("--std", type=float, nargs="+", help="custom input: with --mean")
    ad.add_argument("--check-images", type=_n("samples", 0), default=256,
                    help="validation images the input-scale check runs at full T (0: no check; default 256)")
    ad.add_argument("--data-dir", help="where the dataset is (for the input-scale check)")
    ad.add_argument("--timesteps", type=_n("timesteps"), default=8, help="max timesteps (default 8)")
    ad.add_argument("--out", required=True, help="run directory to write")
    ad.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    ad.set_defaults(func="interop:cmd_adapt")

    po = sub.add_parser("policy", help="SEENN-II policies and learned exit rules")
    posub = po.add_subparsers(dest="policy_command", required=True)
    pt = posub.add_parser("train", help="train a policy on a frozen SNN run")
    pt.add_argument("run")
    pt.add_argument("--dataset", help="default: the run's dataset")
    pt.add_argument("--kind", default="policy", choices=["policy", "learned"],
                    help="policy: SEENN-II (steps chosen from the image); learned: exit rule after each step")
    pt.add_argument("--beta", default="2", help="penalty for a wrong prediction (SEENN-II): a number, a list "
                                                "1,2,5, or auto; with several, the one picked on validation wins")
    pt.add_argument("--max-accuracy-drop", type=_x(0, 1, open_hi=True), default=0.001,
                    help="accuracy target for picking beta on validation (default 0.1 points)")
    pt.add_argument("--weighting", default="authors", choices=["authors", "none"])
    pt.add_argument("--objective", default="exact", choices=["exact", "reinforce"])
    pt.add_argument("--epochs", type=_n("epochs"), default=5)
    pt.add_argument("--hidden", type=_n("hidden"), default=32, help="learned rule: hidden units of each MLP")
    pt.add_argument("--members", type=_n("members"), default=5, help="learned rule: MLPs in the ensemble (probabilities averaged)")
    pt.add_argument("--lr", type=float, default=1e-3)
    pt.add_argument("--seed", type=_n("seed", 0), default=0)
    pt.add_argument("--limit", type=_n("samples"), help="train on the first N training images")
    pt.add_argument("--device", default="cpu")
    pt.add_argument("--out", required=True)
    pt.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    _data_args(pt)
    pt.set_defaults(func="analysis:cmd_policy_train")

    d = sub.add_parser("demo", help="the main job: the shipped Fashion-MNIST SNN with early exit")
    d.add_argument("--train", action="store_true", help="train the model from scratch first")
    d.add_argument("--epochs", type=_n("epochs"), help="with --train: override the shipped run's epochs")
    d.add_argument("--out", default="runs/demo", help="with --train: run directory to write")
    d.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    d.add_argument("--limit", type=_n("samples"), help="evaluate (and with --train, train) on the first N samples")
    d.add_argument("--json", action="store_true")
    _data_args(d)
    d.set_defaults(func="train:cmd_demo")

    pr = sub.add_parser("pretrained", help="list the shipped runs, then the shipped QCFS ANNs (seenn convert NAME, "
                                           "seenn train --init NAME)")
    pr.add_argument("--json", action="store_true", help="the spiking runs as JSON (with --ann: the ANNs)")
    pr.add_argument("--ann", action="store_true", help="only the shipped QCFS ANNs")
    pr.set_defaults(func="misc:cmd_pretrained")

    tr = sub.add_parser("trust", help="let peer runs run this Python file (as it is now; seenn adapt does it for "
                                      "the file it is given)")
    tr.add_argument("file", help="the Python file that builds a peer network")
    tr.set_defaults(func="interop:cmd_trust")

    ev = sub.add_parser("events", help="event-camera recordings: read one, or emulate a dataset from real images")
    evsub = ev.add_subparsers(dest="events_command", required=True)
    em = evsub.add_parser("emulate", help="turn mnist / fashion-mnist / cifar10 images into emulated DVS recordings "
                                          "(N-MNIST's layout and format; use as --dataset events:OUT)")
    em.add_argument("--dataset", required=True, choices=["mnist", "fashion-mnist", "cifar10"])
    em.add_argument("--out", required=True, help="folder to write (Train/CLASS/*.bin, Test/CLASS/*.bin, events.json)")
    em.add_argument("--train-limit", type=_n("samples"), help="emulate the first N training images only")
    em.add_argument("--test-limit", type=_n("samples"), help="emulate the first N test images only")
    em.add_argument("--threshold", type=_x(0.01, 5), default=0.35, help="contrast threshold, log intensity")
    em.add_argument("--noise-hz", type=_x(0, 1000), default=0.5, help="shot-noise events per pixel and second")
    em.add_argument("--seed", type=_n("seed", 0), default=0)
    em.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    em.add_argument("--quiet", action="store_true")
    _data_args(em)
    em.set_defaults(func="misc:cmd_events_emulate")
    ei = evsub.add_parser("info", help="read one recording and summarise it (checks the file)")
    ei.add_argument("file")
    ei.add_argument("--format", choices=["nmnist", "aedat2", "aedat3"], help="default: from the file name")
    ei.add_argument("--sensor", type=_n("image_size"), nargs=2, metavar=("H", "W"),
                    help="sensor size (default: 34 34 for N-MNIST, 128 128 for AEDAT)")
    ei.add_argument("--frames", type=_n("timesteps"), help="also cut it into this many frames")
    ei.add_argument("--frames-by", choices=["time", "count"], default="time")
    ei.add_argument("--json", action="store_true")
    ei.set_defaults(func="misc:cmd_events_info")

    dl = sub.add_parser("download", help="download a dataset (needs the internet)")
    dl.add_argument("dataset", choices=DATASET_NAMES)
    dl.add_argument("--mirror", help="base URL holding the same file names")
    _data_args(dl)
    dl.set_defaults(func="misc:cmd_download")
    return p
