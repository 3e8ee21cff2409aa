"""Snakemake script: build the manifest, one row per image."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.data.manifest import build_manifest, write_manifest  # noqa: E402

dataset = snakemake.params.dataset
with log_to_file(snakemake.log[0]):
    kind = "manifest" if dataset["kind"] == "demo" else dataset["kind"]
    manifest, class_names = build_manifest(
        kind, snakemake.input.source, label_column=dataset["label_column"],
        path_column=dataset["path_column"])
    write_manifest(manifest, class_names, snakemake.output.csv)
    print(f"{len(manifest)} images, {len(class_names)} classes")
