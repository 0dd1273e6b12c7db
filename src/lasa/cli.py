"""The ``lasa`` command line, generated from the stage config dataclasses.

Every subcommand's flags are the fields of its config dataclass (``--model``,
``--batch_size`` ...), and ``--config FILE.yaml`` reads the same keys from YAML,
so the CLI, YAML files and the Python API cannot drift.  Errors that lasa raises
on purpose print one line and exit with status 2.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from typing import Callable

# (module, config class, function, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "locate": ("lasa.locate", "LocateConfig", "locate", "Locate the semantic-bottleneck layer l*."),
}


def register(name: str, module: str, config: str, func: str, help: str) -> None:
    COMMANDS[name] = (module, config, func, help)


def _optional_commands() -> None:
    for name, spec in {
        "train-ssi": ("lasa.ssi", "TrainSSIConfig", "train_ssi", "Train the Safety Semantic Interpreter at l*."),
        "classify": ("lasa.ssi", "ClassifyConfig", "classify", "Score prompts with a model + SSI."),
        "make-pairs": ("lasa.pairs", "MakePairsConfig", "make_pairs", "Build KTO data from the model's own answers."),
        "align": ("lasa.align", "AlignConfig", "align", "Semantic-conditioned KTO fine-tuning."),
        "generate": ("lasa.gate", "GenerateConfig", "generate", "Generate answers, with the SSI gate."),
        "serve": ("lasa.serve", "ServeConfig", "serve", "OpenAI-compatible server over the gated model."),
        "evaluate": ("lasa.evaluate", "EvaluateConfig", "evaluate", "Per-language ASR and over-refusal."),
        "report": ("lasa.report", "ReportConfig", "report", "Markdown/HTML report of runs side by side."),
        "run": ("lasa.pipeline", "RunConfig", "run", "The whole method from one YAML config."),
    }.items():
        mod = spec[0]
        if importlib.util.find_spec(mod) is not None:
            COMMANDS.setdefault(name, spec)


def _setup_logging(level: str) -> None:
    try:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        fmt = "%(message)s"
    except ImportError:  # pragma: no cover
        handler, fmt = logging.StreamHandler(), "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, handlers=[handler],
                        force=True)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    _optional_commands()
    from . import __version__

    parser = ArgumentParser(prog="lasa", description="lasa: make an LLM's safety hold in every language (LASA).",
                            env_prefix="LASA", default_env=False)
    parser.add_argument("--version", action="version", version=f"lasa {__version__}")
    parser.add_argument("--log_level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    subs = parser.add_subcommands(dest="command", required=True)
    for name, (module, cls_name, _func, help_) in COMMANDS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        sub = ArgumentParser(description=(cls.__doc__ or help_).strip().split("\n\n")[0])
        sub.add_argument("--config", action=ActionConfigFile, help="YAML file with the same keys as the flags")
        sub.add_class_arguments(cls, nested_key=None, fail_untyped=False, sub_configs=True)
        subs.add_subcommand(name, sub, help=help_)
    return parser


def config_from_namespace(cls, ns) -> object:
    fields = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in vars(ns).items() if k in fields}
    return cls(**data)


def main(argv: list[str] | None = None) -> int:
    from .errors import LasaError

    argv = list(sys.argv[1:] if argv is None else argv)
    # `lasa run CONFIG.yaml` (positional) == `lasa run --config CONFIG.yaml`
    if len(argv) >= 2 and argv[0] == "run" and not argv[1].startswith("-"):
        argv = ["run", "--config", argv[1], *argv[2:]]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        parser = build_parser()
        ns = parser.parse_args(argv)
        _setup_logging(ns.log_level)
        name = ns.command
        module, cls_name, func_name, _ = COMMANDS[name]
        mod = importlib.import_module(module)
        cfg = config_from_namespace(getattr(mod, cls_name), ns[name])
        func: Callable = getattr(mod, func_name)
        func(cfg)
        return 0
    except LasaError as exc:
        print(f"lasa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lasa: interrupted (completed work is kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
