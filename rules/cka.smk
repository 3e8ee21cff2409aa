rule cka:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
        weights=get_weights_input,
        checkpoints=get_cka_checkpoints,
    output:
        table="results/compare/cka.csv",
        heatmap=report(
            "results/compare/cka.png",
            caption="../report/cka.rst",
            category="Similarity",
        ),
        summary="results/compare/summary.json",
    log:
        "logs/compare/cka.log",
    benchmark:
        "results/benchmarks/cka.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
        # speed settings as resources (no rerun trigger), as extract does
        explain_device=config["explain"]["device"],
        explain_batch_size=config["explain"]["batch_size"],
    params:
        cka=config["similarity"]["cka"],
        model=config["model"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        weights_sha256=get_weights_sha256,
        checkpoints_sha256=get_cka_checkpoints_sha256,
    script:
        "../scripts/cka.py"
