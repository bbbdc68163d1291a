"""Settings of how per-file work is spread (``executor``) and of what a run writes (``output``)."""

from __future__ import annotations

from dataclasses import dataclass

from sound_cluster.config.checks import fail, non_negative, one_of, positive_float, positive_int

EXPORTS = ("segments", "jams", "audacity", "raven")  # output.export (sound_cluster.outputs.export writes them)



@dataclass(frozen=True)
class ExecutorParams:
    """How per-file work is spread: ``serial``, ``process`` or ``dask`` (``auto`` is resolved when built).

    ``address``: a running Dask scheduler (``tcp://host:port``) for ``dask``; ``None`` starts a
    ``LocalCluster`` of ``n_workers`` processes on this machine.

    Attributes
    ----------
    kind
        serial | process | dask | auto (process when more than one core)
    n_workers
        null = number of usable cores (process; dask's LocalCluster)
    address
        dask only: a running scheduler, e.g. tcp://10.0.0.5:8786; null starts a LocalCluster here. Workers
        must see data.path, features.cache_dir and the run folder (and task=apply's models) at the same paths.
    steps_in_memory_mb
        a fit holds at most this many MB of step embeddings in the main process (23 MB per hour of audio); the
        rest are read from the step cache beside the features when needed, so they do not grow the main
        process's memory with the hours (same results); inf: all in memory
    inference
        where the encoder runs over the files: main (the main process, on every core) | workers (the executor's
        workers, one TensorFlow thread each: each loads the encoder once, writes a fit's step embeddings to the
        step cache and every file's posteriors to the run folder, and sends back a few numbers per file) | auto
        (workers under dask, where the workers may be other machines; main otherwise)
    """

    kind: str = "auto"
    n_workers: int | None = None
    address: str | None = None
    steps_in_memory_mb: float = 64.0
    inference: str = "auto"

    def check(self, prefix: str = "executor") -> None:
        one_of(f"{prefix}.kind", self.kind, ("auto", "serial", "process", "dask"))
        if self.n_workers is not None:
            positive_int(f"{prefix}.n_workers", self.n_workers)
        non_negative(f"{prefix}.steps_in_memory_mb", self.steps_in_memory_mb)
        one_of(f"{prefix}.inference", self.inference, ("auto", "main", "workers"))
        if self.address is not None:
            if self.kind != "dask":
                fail(f"{prefix}.address", self.address, f"null unless {prefix}.kind=dask (it is {self.kind})")
            if not isinstance(self.address, str) or "://" not in self.address:
                fail(f"{prefix}.address", self.address, "a scheduler address such as tcp://10.0.0.5:8786")

    @property
    def on_workers(self) -> bool:
        """Whether the encoder's inference runs on the executor's workers (``inference``, ``auto`` resolved)."""
        return self.inference == "workers" or (self.inference == "auto" and self.kind == "dask")


@dataclass(frozen=True)
class OutputParams:
    """What the run writes besides the tables: plots and how trees are written.

    Attributes
    ----------
    progress
        auto (a bar when stdout is a terminal) | true | false
    max_plots
        plots/<path>.png for at most this many files
    plot_cuts
        segment boundaries drawn on each plot of a file without its own cut (clips): the tree cut into this many
        segments (a file with sounds shows its own cut)
    min_segment_s
        tree JSON: nodes shorter than this are written without children
    max_tree_depth
        tree JSON: nodes this deep are written without children (keeps JSON nesting sane)
    segments
        segments per file in the report and segments.csv: auto (each tree's own count, auto_k: one per
        sound where pauses separate sounds, else the cut before the largest jump in merge cost) or an
        integer
    auto_min_segment_s
        auto by merge cost: no segment shorter than this (seconds)
    boundary_refine_s
        > 0: leaf boundaries move to the strongest energy onset within this many seconds
    export
        what else to write, a list of: segments (segments.csv), jams (jams/<path>.jams, needs jams),
        audacity (export/audacity/<path>.txt label tracks), raven (export/raven/<path>.selections.txt
        selection tables); each file cut into output.segments (or export_k) segments
    export_segments
        true: segments.csv (path,segment,start_s,end_s,cluster,confidence) at output.segments
    export_k
        segments per file in segments.csv instead of output.segments (fewer for short files)
    export_jams
        true: jams/<path>.jams, the nested cuts as a JAMS multi_segment annotation (needs jams)
    report
        report.html: clusters to browse and listen to, trees, metrics
    report_excerpt_s
        audio excerpts written for the report's players are at most this long
    overwrite
        true: a run folder that already holds a run (hydra.run.dir) is emptied of its outputs first
    """

    progress: bool | str = "auto"
    max_plots: int = 50
    plot_cuts: tuple[int, ...] = (2, 4, 8)
    min_segment_s: float = 0.0
    max_tree_depth: int = 400
    segments: int | str = "auto"
    auto_min_segment_s: float = 0.2
    boundary_refine_s: float = 0.0
    export: tuple[str, ...] = ()
    export_segments: bool = False
    export_k: int | None = None
    export_jams: bool = False
    report: bool = True
    report_excerpt_s: float = 10.0
    overwrite: bool = False

    def exports(self) -> set[str]:
        """What the run exports: ``output.export``, with ``export_segments`` and ``export_jams`` as aliases."""
        return (set(self.export) | ({"segments"} if self.export_segments else set())
                | ({"jams"} if self.export_jams else set()))

    def check(self, prefix: str = "output") -> None:
        for name in ("export_segments", "export_jams", "report", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                fail(f"{prefix}.{name}", getattr(self, name), "true or false")
        if self.export_k is not None:
            positive_int(f"{prefix}.export_k", self.export_k)
        if self.segments != "auto" and (isinstance(self.segments, bool) or not isinstance(self.segments, int)
                                        or self.segments < 1):
            fail(f"{prefix}.segments", self.segments, "auto or a positive integer")
        positive_float(f"{prefix}.auto_min_segment_s", self.auto_min_segment_s)
        non_negative(f"{prefix}.boundary_refine_s", self.boundary_refine_s, what="a number of seconds >= 0")
        positive_float(f"{prefix}.report_excerpt_s", self.report_excerpt_s)
        if not isinstance(self.export, (list, tuple)) or not all(isinstance(e, str) for e in self.export):
            fail(f"{prefix}.export", self.export, "a list of " + ", ".join(EXPORTS))
        for e in self.export:
            one_of(f"{prefix}.export", e, EXPORTS)
        if self.progress != "auto" and not isinstance(self.progress, bool):
            fail(f"{prefix}.progress", self.progress, "auto, true or false")
        non_negative(f"{prefix}.max_plots", self.max_plots, integer=True)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in self.plot_cuts):
            fail(f"{prefix}.plot_cuts", list(self.plot_cuts), "a list of integers >= 2")
        non_negative(f"{prefix}.min_segment_s", self.min_segment_s, what="a number of seconds >= 0")
        positive_int(f"{prefix}.max_tree_depth", self.max_tree_depth)

