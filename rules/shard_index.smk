rule shard_index:
    input:
        shards=get_shard_paths,
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        "results/features/index.json",
    log:
        "logs/shard_index.log",
    benchmark:
        "results/benchmarks/shard_index.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 10 * attempt,
    params:
        # the weights' content decides, not their modification time (see get_weights_sha256)
        weights_sha256=get_weights_sha256,
        model=config["model"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        codes_layer=config["codes_layer"],
        shard_size=config["extract"]["shard_size"],
    script:
        "../scripts/shard_index.py"
