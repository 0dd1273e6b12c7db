"""``lasa run CONFIG.yaml``: the whole method, cached stage by stage.

Stages, in order (each writes into ``<out>/<stage>/``)::

    locate -> train-ssi -> make-pairs -> align -> eval-base -> eval-aligned -> eval-gated -> report

A manifest (``<out>/manifest.json``, written atomically after every stage) records
for each stage: the hash of its inputs (its own config + the completion tokens of
the stages it depends on), its status, timings and outputs, plus versions and the
full config.  A stage is skipped when it is ``done`` with the same input hash and
its outputs still exist; it reruns when its config changed, when an upstream stage
reran, or when its outputs were deleted.  A stage killed midway is not ``done`` and
reruns on the next call, resuming its own partial work (generation JSONL skips
finished ids, alignment resumes from its last checkpoint).  ``--stage X`` runs just X
(its upstream outputs must exist).

Each stage section of the YAML (``locate:``, ``ssi:``, ``pairs:``, ``align:``,
``evaluate:``, ``report:``) holds overrides for that stage's config dataclass; unknown
keys are an error naming the valid ones.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .configs import ModelArgs, check_types
from .errors import ConfigError, LasaError
from .io import atomic_write_json, read_json, sha256_json

log = logging.getLogger(__name__)

STAGES = ("locate", "train-ssi", "make-pairs", "align", "eval-base", "eval-aligned", "eval-gated", "report")
DEPENDS = {
    "locate": (), "train-ssi": ("locate",), "make-pairs": (), "align": ("train-ssi", "make-pairs"),
    "eval-base": (), "eval-aligned": ("align",), "eval-gated": ("align", "train-ssi"),
    "report": ("locate", "train-ssi", "eval-base", "eval-aligned", "eval-gated"),
}
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelArgs))


@dataclass
class RunConfig(ModelArgs):
    """Run the whole LASA method from one YAML config, stage by stage, cached and resumable.

    Args:
        model: Base model for every stage (embedded, a directory, a .gguf file, or a hub name).
        dtype: auto, float32, bfloat16 or float16.
        device: auto, cpu, cuda or cuda:N.
        gguf_file: GGUF file name inside the model directory.
        adapter: Must be unset (the pipeline trains its own adapter).
        trust_remote_code: Allow model code from the hub.
        out: Run directory (one subdirectory per stage + manifest.json).
        stage: Run only this stage (locate, train-ssi, make-pairs, align, eval-base, eval-aligned, eval-gated, report).
        force: Rerun stages even when cached.
        skip: Stages to leave out (e.g. [align, eval-aligned, eval-gated] for a locate+SSI-only run).
        locate: Overrides for LocateConfig.
        ssi: Overrides for TrainSSIConfig.
        pairs: Overrides for MakePairsConfig.
        align: Overrides for AlignConfig.
        evaluate: Overrides for EvaluateConfig (shared by the three evaluation stages).
        report: Overrides for ReportConfig.
    """

    out: str = "runs/lasa"
    stage: str | None = None
    force: bool = False
    skip: list[str] = field(default_factory=list)
    locate: dict[str, Any] = field(default_factory=dict)
    ssi: dict[str, Any] = field(default_factory=dict)
    pairs: dict[str, Any] = field(default_factory=dict)
    align: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_types(self)
        if self.stage is not None and self.stage not in STAGES:
            raise ConfigError(f"stage={self.stage!r} is not one of {', '.join(STAGES)}")
        bad = [s for s in self.skip if s not in STAGES]
        if bad:
            raise ConfigError(f"skip: unknown stage(s) {bad}; stages are {', '.join(STAGES)}")
        if self.adapter:
            raise ConfigError("run: 'adapter' must be unset; the pipeline trains and applies its own adapter")


def _make(module: str, cls_name: str, overrides: dict, section: str, **fixed):
    cls = getattr(importlib.import_module(module), cls_name)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
    kw = {k: v for k, v in fixed.items() if k in names}
    kw.update({k: v for k, v in overrides.items() if k not in fixed})
    return cls(**kw)


class Pipeline:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.manifest_path = self.out / "manifest.json"
        self.manifest = self._load_manifest()
        self.model_kw = {k: getattr(cfg, k) for k in _MODEL_FIELDS}

    def _load_manifest(self) -> dict:
        if self.manifest_path.exists():
            try:
                m = read_json(self.manifest_path)
                if isinstance(m, dict) and "stages" in m:
                    return m
            except LasaError as exc:
                log.warning("ignoring unreadable manifest (%s); all stages will rerun", exc)
        return {"kind": "lasa.run", "stages": {}}

    def _save(self) -> None:
        from .meta import versions

        self.manifest["versions"] = versions()
        self.manifest["config"] = dataclasses.asdict(self.cfg)
        atomic_write_json(self.manifest_path, self.manifest)

    def d(self, stage: str) -> Path:
        return self.out / stage

    # --- stage configs ---------------------------------------------------------------------
    def stage_config(self, stage: str):
        c, m = self.cfg, self.model_kw
        if stage == "locate":
            return _make("lasa.locate", "LocateConfig", c.locate, "locate", out=str(self.d(stage)), **m)
        if stage == "train-ssi":
            return _make("lasa.ssi", "TrainSSIConfig", c.ssi, "ssi", out=str(self.d(stage)),
                         locate=str(self.d("locate")), layer=c.ssi.get("layer"), **m)
        if stage == "make-pairs":
            return _make("lasa.pairs", "MakePairsConfig", c.pairs, "pairs", out=str(self.d(stage) / "pairs.jsonl"), **m)
        if stage == "align":
            return _make("lasa.align", "AlignConfig", c.align, "align", out=str(self.d(stage)),
                         data=str(self.d("make-pairs") / "pairs.jsonl"), ssi=str(self.d("train-ssi")), **m)
        if stage.startswith("eval-"):
            kind = stage.split("-", 1)[1]
            fixed: dict[str, Any] = dict(m, out=str(self.d(stage)), name={"base": "base", "aligned": "aligned",
                                                                          "gated": "aligned+gate"}[kind])
            if kind in ("aligned", "gated"):
                fixed["adapter"] = str(self.d("align") / "adapter")
            fixed["ssi"] = str(self.d("train-ssi")) if kind == "gated" else None
            fixed["gate"] = kind == "gated"
            fixed["overwrite"] = True  # a rerun of this stage (inputs changed) regenerates
            return _make("lasa.evaluate", "EvaluateConfig", c.evaluate, "evaluate", **fixed)
        if stage == "report":
            runs = [str(self.d(s)) for s in ("eval-base", "eval-aligned", "eval-gated")
                    if s not in c.skip and (self.d(s) / "summary.json").exists()]
            return _make("lasa.report", "ReportConfig", c.report, "report", out=str(self.d(stage)), runs=runs,
                         locate=str(self.d("locate")) if "locate" not in c.skip else None,
                         ssi=str(self.d("train-ssi")) if "train-ssi" not in c.skip else None)
        raise ConfigError(f"unknown stage {stage}")

    def runner(self, stage: str) -> Callable[[Any], Any]:
        mod, fn = {"locate": ("lasa.locate", "locate"), "train-ssi": ("lasa.ssi", "train_ssi"),
                   "make-pairs": ("lasa.pairs", "make_pairs"), "align": ("lasa.align", "align"),
                   "report": ("lasa.report", "report")}.get(stage, ("lasa.evaluate", "evaluate"))
        return getattr(importlib.import_module(mod), fn)

    def outputs_exist(self, stage: str) -> bool:
        marker = {"locate": "locate.json", "train-ssi": "ssi.json", "make-pairs": "pairs.jsonl",
                  "align": "align.json", "report": "report.html"}.get(stage, "summary.json")
        return (self.d(stage) / marker).exists()

    def inputs_hash(self, stage: str, cfg) -> str:
        ups = {u: self.manifest["stages"].get(u, {}).get("token") for u in DEPENDS[stage] if u not in self.cfg.skip}
        return sha256_json({"config": dataclasses.asdict(cfg), "upstream": ups})[:24]

    # --- running -----------------------------------------------------------------------------
    def run(self) -> dict:
        todo = [self.cfg.stage] if self.cfg.stage else [s for s in STAGES if s not in self.cfg.skip]
        from tqdm.auto import tqdm

        bar = tqdm(todo, desc="lasa run", unit="stage")
        for stage in bar:
            bar.set_postfix_str(stage)
            cfg = self.stage_config(stage)
            h = self.inputs_hash(stage, cfg)
            rec = self.manifest["stages"].get(stage, {})
            if (not self.cfg.force and rec.get("status") == "done" and rec.get("inputs_hash") == h
                    and self.outputs_exist(stage)):
                log.info("run: %s is up to date (cached)", stage)
                continue
            missing = [u for u in DEPENDS[stage] if u not in self.cfg.skip and not self.outputs_exist(u)]
            if missing:
                raise LasaError(f"stage {stage} needs the output of {', '.join(missing)}; run those stages first")
            log.info("run: stage %s", stage)
            self.manifest["stages"][stage] = {"status": "running", "inputs_hash": h, "started": time.time()}
            self._save()
            t0 = time.time()
            result = self.runner(stage)(cfg)
            self.manifest["stages"][stage] = {
                "status": "done", "inputs_hash": h, "token": uuid.uuid4().hex[:12], "started": t0,
                "duration_s": round(time.time() - t0, 2), "output": str(self.d(stage)),
                **({"summary": _brief(stage, result)} if _brief(stage, result) else {}),
            }
            self._save()
        bar.close()
        return self.manifest


def _brief(stage: str, result) -> dict | None:
    if stage == "locate" and isinstance(result, dict):
        return {"best_layer": result.get("best_layer"), "n_layers": result.get("n_layers")}
    return None


def run(cfg: RunConfig) -> dict:
    manifest = Pipeline(cfg).run()
    if cfg.stage in (None, "report"):
        from .summary import print_final_table

        print_final_table(Path(cfg.out))
    return manifest
