"""The ``metarl`` command line: train, evaluate, bench, plot, compare, envs, agents.

Every error a user can cause (a bad config, an unknown env, a missing checkpoint) is printed as
one line ``metarl: error: <message>`` on stderr with exit code 2, and leaves no run directory
behind: the config, the env, the agent and the sampler are all built before the run directory
is created.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import inspect
import json
import logging
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib.resources import as_file
from pathlib import Path
from typing import Any, NoReturn

import yaml

import metarl
from metarl import registry
from metarl.errors import CheckpointError, ConfigError, EnvError, MetarlError, choices

__all__ = ["build_parser", "main"]

logger = logging.getLogger("metarl.cli")

RUNS_ROOT = Path("runs")
CONFIG_NAME = "config.yaml"

_DESCRIPTION = """\
metarl trains meta-reinforcement-learning agents (MAML-RL, RL², VariBAD) on task
distributions, measures how fast they adapt to held-out tasks, and reproduces published results.

Start here:
  metarl train                     train the quickstart (MAML-TRPO on 2-D navigation)
  metarl train CONFIG.yaml         train from a config (see experiments/)
  metarl evaluate runs/RUN         adaptation table of a trained run
  metarl envs | metarl agents      what can be trained
"""

_TRAIN_EPILOG = """\
examples:
  metarl train                                  the quickstart config
  metarl train experiments/maml/halfcheetah-vel.yaml --set run.seed=3
  metarl train cfg.yaml --set agent.inner_lr=0.05 --set env.kwargs.task_in_obs=true
  metarl train cfg.yaml --print-config          show the resolved config and exit
  metarl train --resume runs/quickstart-20250101-120000

A run directory holds config.yaml, metrics.csv, TensorBoard events, train.log,
checkpoints/ (the last few and best.pt), eval.json and eval.png.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line, like every other metarl error."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see '{self.prog} --help')")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"metarl: error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# Logging to the terminal


class _ConsoleHandler(logging.Handler):
    """Log records on stderr without breaking a tqdm progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(
                f"metarl: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr
            )
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def _console_logging(verbose: bool) -> Iterator[None]:
    root = logging.getLogger("metarl")
    handler = _ConsoleHandler(level=logging.INFO if verbose else logging.WARNING)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# --------------------------------------------------------------------------------------------
# Building a run from a config


def _quickstart() -> contextlib.AbstractContextManager[Path]:
    from metarl import configs

    return as_file(configs.path())


def _load(
    path: Path, overrides: Sequence[str], device: str | None, *, default_name: str | None
) -> Any:
    from metarl.config import apply_overrides, load_yaml, parse_config

    data = load_yaml(path)
    if device is not None:
        overrides = [*overrides, f"run.device={device}"]
    data, origin = apply_overrides(data, overrides)
    return parse_config(
        data, agent_configs=registry.agent_config, default_name=default_name, origin=origin
    )


def _check_run_dir(run_dir: Path) -> None:
    """A metarl run directory has a config.yaml; otherwise say so on one line."""
    if not run_dir.exists():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if not run_dir.is_dir() or not (run_dir / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} is not a metarl run directory (it has no {CONFIG_NAME}); pass a folder under runs/ made by `metarl train`"
        )


def _build(config: Any, *, device: Any) -> tuple[Any, Any]:
    """The task distribution and the agent of ``config`` (raises on any bad setting)."""
    from metarl.seeding import derive_seed

    dist = registry.make_env(config.env.name, config.env.preset, **dict(config.env.kwargs))
    _check_env_kwargs(dist, config.sampler.env_kwargs)
    cls = registry.agent_class(config.agent.name)
    agent = cls(
        config.agent.config, dist=dist, device=device, seed=derive_seed(config.run.seed, "agent")
    )
    return dist, agent


def _check_env_kwargs(dist: Any, env_kwargs: Mapping[str, Any]) -> None:
    """sampler.env_kwargs must be keyword arguments that ``dist.make_batched`` takes."""
    if not env_kwargs:
        return
    try:
        signature = inspect.signature(dist.make_batched)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [
        n
        for n, p in params.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "tasks"
    ]
    bad = [k for k in env_kwargs if k not in valid]
    if bad:
        raise EnvError(
            f"sampler.env_kwargs {choices(bad)} not accepted by env {dist.name!r}; valid env_kwargs: {choices(valid) or 'none'}"
        )


def _with_defaults(saved: Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint's config with every field this version has, so that a field added since the
    checkpoint was written is compared at its default instead of reported as a change; the saved
    mapping as it is when it no longer parses."""
    from metarl.config import parse_config

    try:
        return parse_config(saved, agent_configs=registry.agent_config).to_dict()
    except MetarlError:
        return saved


def _config_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """``"run.iterations 4 -> 8, ..."`` for the leaves that differ between two config dicts."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = _config_changes(a, b, f"{prefix}{key}.")
            if inner:
                changes.append(inner)
        elif a != b:
            changes.append(f"{prefix}{key} {a!r} -> {b!r}")
    return ", ".join(changes)


def _new_run_dir(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = RUNS_ROOT / f"{name}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _file_stamps(paths: Sequence[Path]) -> dict[str, int]:
    """Name -> modification time in ns of each of ``paths`` (to tell whether any was written)."""
    return {p.name: p.stat().st_mtime_ns for p in paths}


def _write_text_atomic(path: Path, text: str) -> None:
    from metarl.checkpoint import atomic_write

    atomic_write(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# train


def _cmd_train(args: argparse.Namespace) -> int:
    from metarl.checkpoint import CheckpointDir, fits_config
    from metarl.config import to_yaml
    from metarl.seeding import derive_seed
    from metarl.trainer import (
        CHECKPOINT_DIR,
        Trainer,
        make_sampler,
        resolve_device,
        set_torch_threads,
    )

    state = None
    note = None
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError(
                f"--resume continues {args.resume!r} with its own config.yaml; drop the config file {args.config!r}"
            )
        if args.run_dir is not None:
            raise ConfigError("--resume and --run-dir both name a run directory; give one")
        run_dir = Path(args.resume)
        _check_run_dir(run_dir)
        config = _load(run_dir / CONFIG_NAME, args.set, args.device, default_name=None)
        checkpoints = CheckpointDir(run_dir / CHECKPOINT_DIR, keep=config.run.keep_checkpoints)
        with _console_logging(args.verbose):
            ckpt_path, state = checkpoints.load_latest()
    else:
        if args.config is None:
            with _quickstart() as path:
                config = _load(path, args.set, args.device, default_name="quickstart")
        else:
            config = _load(
                Path(args.config), args.set, args.device, default_name=Path(args.config).stem
            )
        run_dir = Path(args.run_dir) if args.run_dir is not None else _new_run_dir(config.run.name)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ConfigError(
                f"run directory {str(run_dir)!r} already exists and is not empty; continue it with --resume {run_dir} or pick another --run-dir"
            )

    if args.print_config:
        # The env section names things outside the config schema (family, preset, kwargs):
        # build the distribution so that a typo there fails here as it would in training.
        dist = registry.make_env(config.env.name, config.env.preset, **dict(config.env.kwargs))
        _check_env_kwargs(dist, config.sampler.env_kwargs)
        sys.stdout.write(to_yaml(config))
        return 0

    device = resolve_device(config.run.device)
    set_torch_threads(config.run.torch_threads)
    dist, agent = _build(config, device=device)
    sampler = make_sampler(
        config, dist, seed=derive_seed(config.run.seed, "sampler"), device=device
    )
    try:
        trainer = Trainer(
            config,
            dist,
            agent=agent,
            sampler=sampler,
            run_dir=run_dir,
            device=device,
            progress=args.progress,
            time_limit_minutes=args.time_limit,
        )
        if state is not None:
            with fits_config(ckpt_path):
                trainer.load_state_dict(state)
            if config.run.iterations < trainer.iteration:
                raise ConfigError(
                    f"run.iterations {config.run.iterations} is below the {trainer.iteration} iterations of {ckpt_path.name}; "
                    f"valid: run.iterations >= {trainer.iteration} (--set run.iterations=N to train further)"
                )
            changed = _config_changes(_with_defaults(state.get("config", {})), config.to_dict())
            note = f"resuming from {ckpt_path.name} (iteration {trainer.iteration})"
            if changed:
                note += f"; config changed since the checkpoint: {changed}"
        created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoints = CheckpointDir(run_dir / CHECKPOINT_DIR)
        before = _file_stamps(checkpoints.periodic())
        previous_config = (
            (run_dir / CONFIG_NAME).read_text(encoding="utf-8") if state is not None else None
        )
        try:
            return _train(trainer, run_dir, args, to_yaml(config), note=note)
        except MetarlError:
            # Bad input found only once training started (e.g. an env rejecting its kwargs at
            # the first collection): a new run with no checkpoint cannot be resumed, so remove
            # it and the folders made for it, or empty the --run-dir that was empty before; a
            # resumed run that wrote no checkpoint keeps the config.yaml it had, so that the
            # next --resume without the bad --set works.
            if previous_config is not None and _file_stamps(checkpoints.periodic()) == before:
                _write_text_atomic(run_dir / CONFIG_NAME, previous_config)
            if state is None and not checkpoints.periodic():
                if created:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    for folder in created[1:]:
                        with contextlib.suppress(OSError):
                            folder.rmdir()
                else:
                    for entry in list(run_dir.iterdir()):
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
            raise
    finally:
        sampler.close()


def _train(
    trainer: Any, run_dir: Path, args: argparse.Namespace, config_yaml: str, *, note: str | None
) -> int:
    from metarl.logger import attach_file_log

    _write_text_atomic(run_dir / CONFIG_NAME, config_yaml)
    handler = attach_file_log(run_dir)
    try:
        with _console_logging(args.verbose):
            logger.info("metarl %s: run directory %s", metarl.__version__, run_dir)
            if note is not None:
                logger.info(note)
            result = trainer.run()
    finally:
        logging.getLogger("metarl").removeHandler(handler)
        handler.close()
    print(result.report.table())
    print(f"run directory:   {run_dir}")
    print(f"evaluation:      {result.eval_path}")
    print(f"adaptation plot: {result.plot_path}")
    if result.best_metric is not None and result.best_value is not None:
        print(f"best {result.best_metric}: {result.best_value:.4g} (checkpoints/best.pt)")
    if result.stopped_early is not None:
        print(
            f"stopped early ({result.stopped_early}) at iteration {result.iterations} of "
            f"{trainer.config.run.iterations}; continue with: metarl train --resume {run_dir}"
        )
        if result.stopped_early == "SIGTERM":
            return 128 + signal.SIGTERM  # the run did not finish, as a killed process reports
    return 0


# --------------------------------------------------------------------------------------------
# evaluate


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from metarl.checkpoint import CheckpointDir, load_checkpoint, restore_agent
    from metarl.trainer import (
        CHECKPOINT_DIR,
        EVAL_NAME,
        eval_tasks,
        evaluate_agent,
        resolve_device,
        set_torch_threads,
        write_report,
    )

    run_dir = Path(args.run_dir)
    _check_run_dir(run_dir)
    config = _load(run_dir / CONFIG_NAME, [], args.device, default_name=None)
    checkpoints = CheckpointDir(run_dir / CHECKPOINT_DIR, keep=config.run.keep_checkpoints)
    with _console_logging(args.verbose):
        if args.checkpoint == "last":
            path, state = checkpoints.load_latest()
        else:
            path = checkpoints.resolve(args.checkpoint)
            state = load_checkpoint(path)
    device = resolve_device(config.run.device)
    set_torch_threads(config.run.torch_threads)
    dist, agent = _build(config, device=device)
    restore_agent(agent, state, path)
    out = Path(args.out) if args.out is not None else run_dir / EVAL_NAME
    tasks = eval_tasks(config, dist, split=args.split, num_tasks=args.num_tasks)
    with _console_logging(args.verbose):
        report = evaluate_agent(
            config,
            agent=agent,
            dist=dist,
            tasks=tasks,
            iteration=int(state.get("iteration", 0)),
            device=device,
            rounds=args.rounds,
            episodes_per_round=args.episodes_per_round,
        )
        json_path, png_path = write_report(report, config, path=out, dist=dist, split=args.split)
        belief_path = None
        if args.belief_tasks > 0 and callable(getattr(agent, "beliefs", None)):
            belief_path = (
                run_dir / _BELIEF_NAME
                if args.out is None
                else out.with_name(f"{out.stem}.belief.json")
            )
            _write_beliefs(
                belief_path,
                config,
                agent=agent,
                dist=dist,
                tasks=tasks[: args.belief_tasks],
                device=device,
                episodes=_trial_episodes(config, args),
            )
    print(report.table())
    print(f"checkpoint:      {path}")
    print(f"evaluation:      {json_path}")
    print(f"adaptation plot: {png_path}")
    if belief_path is not None:
        hint = f" (drawn by `metarl plot {run_dir}`)" if args.out is None else ""
        print(f"belief:          {belief_path}{hint}")
    return 0


#: Belief trajectories written by ``metarl evaluate`` and drawn by ``metarl plot``.
_BELIEF_NAME = "belief.json"


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _trial_episodes(config: Any, args: argparse.Namespace) -> int:
    """Episodes of one evaluation trial: the evaluation's rounds (``--rounds`` or
    ``evaluation.rounds``; round k of a trial agent is episode k of a trial)."""
    return int(config.evaluation.rounds if args.rounds is None else args.rounds)


def _write_beliefs(
    path: Path,
    config: Any,
    *,
    agent: Any,
    dist: Any,
    tasks: Sequence[Any],
    device: Any,
    episodes: int,
) -> Path:
    """One evaluation-length trial per task with the agent's belief at every step
    (``agent.beliefs``), written atomically as JSON (0644) for ``metarl plot``."""
    from metarl.evaluation import write_eval
    from metarl.seeding import derive_seed
    from metarl.trainer import make_sampler

    sampler = make_sampler(
        config, dist, seed=derive_seed(config.run.seed, "beliefs"), device=device
    )
    try:
        data = agent.beliefs(
            sampler,
            tasks,
            episodes_per_trial=episodes,
            deterministic=config.evaluation.deterministic,
        )
    finally:
        sampler.close()
    return write_eval(path, data)


# --------------------------------------------------------------------------------------------
# bench, plot, compare, envs, agents


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def _cmd_bench(args: argparse.Namespace) -> int:
    module = registry.bench_module(args.bench)
    result = module.run(args)
    if not isinstance(result, Mapping):
        raise MetarlError(f"bench {args.bench!r} returned {type(result).__name__}, expected a dict")
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=False, default=str))
    elif callable(getattr(module, "format_text", None)):
        print(module.format_text(result))
    else:
        rows = _flatten(result)
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            print(f"{key:<{width}}  {_format_value(value)}")
    return 0


def _plotting(function: str) -> Any:
    try:
        module = importlib.import_module("metarl.plotting")
    except ModuleNotFoundError as err:
        if err.name in ("metarl.plotting", "metarl"):
            raise MetarlError(
                "plotting is not available in this install: module 'metarl.plotting' is missing"
            ) from None
        raise
    if not hasattr(module, function):
        raise MetarlError(
            f"plotting is not available in this install: metarl.plotting has no {function}()"
        )
    return getattr(module, function)


def _cmd_plot(args: argparse.Namespace) -> int:
    for path in _plotting("main_plot")(args) or []:
        print(path)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    table = _plotting("main_compare")(args)
    if table:
        print(table)
    if args.out:
        print(f"table written to {args.out}")
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    families = registry.env_families()
    if not families:
        print("no task distributions are installed")
        return 0
    width = max(len(name) for name in families)
    for name, fam in families.items():
        presets = ", ".join(
            f"{p} (default)" if p == fam.default_preset else p for p in sorted(fam.presets)
        )
        summary = " ".join(str(fam.summary).split())
        print(f"{name:<{width}}  {summary}; presets: {presets}")
    return 0


def _cmd_agents(args: argparse.Namespace) -> int:
    available = registry.agents()
    if not available:
        print("no agents are installed")
        return 0
    width = max(len(n) for n in available)
    for name, cls in available.items():
        print(f"{name:<{width}}  {registry.agent_summary(cls)}")
    return 0


# --------------------------------------------------------------------------------------------
# The parser


def _add_bench(subparsers: Any, argv: Sequence[str]) -> None:
    names = registry.benches()
    bench = subparsers.add_parser(
        "bench",
        help=f"measure throughput: {', '.join(names) if names else 'none installed'}",
        description="Run a benchmark and print its figures (ratios against the anchors it names).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  metarl bench envs --json\n  metarl bench sampler --help",
    )
    bench_sub = bench.add_subparsers(
        dest="bench", metavar="BENCH", required=True, parser_class=_Parser
    )
    # Bench modules import simulators; build their options only when ``bench`` was asked for.
    wanted = "bench" in argv
    for name in names:
        module = None
        error = None
        if wanted:
            try:
                module = registry.bench_module(name)
            except ImportError as err:
                error = f"bench {name!r} cannot be imported: {err}"
        doc = (inspect.getdoc(module) or "").splitlines() if module is not None else []
        sub = bench_sub.add_parser(
            name,
            help=doc[0] if doc else f"the {name} benchmark",
            description=inspect.getdoc(module) if module else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if module is not None and hasattr(module, "add_arguments"):
            module.add_arguments(sub)
        if not any("--json" in action.option_strings for action in sub._actions):
            sub.add_argument("--json", action="store_true", help="print the result as JSON")
        sub.set_defaults(func=_cmd_bench if error is None else _raiser(error))


def _raiser(message: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise MetarlError(message)

    return run


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``metarl`` argument parser (``argv`` decides whether bench modules are imported)."""
    parser = _Parser(
        prog="metarl",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"metarl {metarl.__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", parser_class=_Parser
    )

    train = sub.add_parser(
        "train",
        help="meta-train an agent from a YAML config (default: the quickstart)",
        description="Meta-train an agent. Without CONFIG, trains the quickstart: MAML-TRPO on 2-D navigation. "
        "At the end, prints the adaptation table and writes eval.json and the adaptation plot into the run directory.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TRAIN_EPILOG,
    )
    train.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help="YAML config file (default: the packaged quickstart.yaml)",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config field; VALUE is read as YAML (repeatable)",
    )
    train.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where learning runs (overrides run.device; auto = CUDA when available)",
    )
    train.add_argument(
        "--time-limit",
        type=_positive_float,
        metavar="MINUTES",
        help="stop after the iteration in progress once this many minutes have passed, "
        "evaluate and checkpoint it (overrides run.time_limit_minutes; continue with --resume)",
    )
    train.add_argument(
        "--run-dir",
        metavar="DIR",
        help="write the run here instead of runs/<name>-<timestamp>/ (must be new or empty)",
    )
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its latest readable checkpoint"
    )
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    progress = train.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show the progress bar",
    )
    progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="never show the progress bar (default: only on a terminal)",
    )
    train.add_argument(
        "-v", "--verbose", action="store_true", help="log progress lines to the terminal too"
    )
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "evaluate",
        help="measure adaptation of a trained run on held-out tasks",
        description="Load a run's config and checkpoint, rebuild the env and agent, run the adaptation protocol "
        "(round k = behaviour after k adaptations), print the table, and write eval.json and its plot; "
        "for agents that expose their belief (VariBAD), also belief.json on a few of the tasks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  metarl evaluate runs/quickstart-20250101-120000\n  metarl evaluate RUN --checkpoint best --num-tasks 100 --out best.json",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `metarl train`")
    ev.add_argument(
        "--checkpoint",
        default="last",
        metavar="last|best|PATH",
        help="which checkpoint to load (default: last)",
    )
    ev.add_argument(
        "--split",
        choices=["test", "train"],
        default="test",
        help="task split to evaluate on (default: test)",
    )
    ev.add_argument(
        "--num-tasks",
        type=_positive_int,
        metavar="N",
        help="number of tasks (default: evaluation.num_tasks of the run)",
    )
    ev.add_argument(
        "--rounds",
        type=_positive_int,
        metavar="K",
        help="adaptation rounds (default: evaluation.rounds of the run)",
    )
    ev.add_argument(
        "--episodes-per-round",
        type=_positive_int,
        metavar="N",
        help="episodes per task per round (default: the run's)",
    )
    ev.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where the agent runs (default: the run's run.device)",
    )
    ev.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the JSON report; the plot goes next to it (default: RUN_DIR/eval.json)",
    )
    ev.add_argument(
        "--belief-tasks",
        type=_non_negative_int,
        default=4,
        metavar="N",
        help="agents that expose their belief (VariBAD): record one trial on each of the first N "
        "evaluation tasks in RUN_DIR/belief.json (next to --out FILE as FILE's stem + .belief.json), "
        "drawn by `metarl plot`; 0 skips it (default: 4)",
    )
    ev.add_argument(
        "-v", "--verbose", action="store_true", help="log progress lines to the terminal"
    )
    ev.set_defaults(func=_cmd_evaluate)

    _add_bench(sub, argv)

    plot = sub.add_parser(
        "plot",
        help="plot learning curves of one or more runs",
        description="Plot the learning curves in the runs' metrics.csv; runs of one config are aggregated over seeds.",
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    plot.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the figures (default: RUN_DIR/plots of the first run)",
    )
    plot.add_argument(
        "--aggregate",
        choices=["mean", "iqm"],
        default="mean",
        help="how to aggregate seeds (default: mean)",
    )
    plot.set_defaults(func=_cmd_plot)

    compare = sub.add_parser(
        "compare",
        help="tabulate the final adaptation results of several runs",
        description="Read each run's eval.json and print a results table (the README's Results table is made this way).",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    compare.add_argument("--out", metavar="FILE", help="also write the table to FILE (markdown)")
    compare.set_defaults(func=_cmd_compare)

    envs = sub.add_parser(
        "envs",
        help="list task-distribution families and their presets",
        description="List task-distribution families: name, presets (the default marked), summary.",
    )
    envs.set_defaults(func=_cmd_envs)
    agents = sub.add_parser(
        "agents",
        help="list the agents",
        description="List the agents that can be named in a config's agent.name.",
    )
    agents.set_defaults(func=_cmd_agents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metarl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except MetarlError as err:
        _fail(str(err))
    except yaml.YAMLError as err:
        _fail(f"malformed YAML: {err}")
    except FileNotFoundError as err:
        _fail(f"file not found: {err.filename or err}")
    except (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError) as err:
        # A path given on the command line that cannot be written (--out naming a folder,
        # --run-dir under a file): name the path, not the temporary file beside it.
        target = err.filename2 if err.filename2 is not None else err.filename
        _fail(f"cannot access {str(target)!r}: {err.strerror or err}")
    except KeyboardInterrupt:
        sys.stderr.write("metarl: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
