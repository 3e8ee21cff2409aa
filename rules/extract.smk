rule extract:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
    output:
        "results/features/shard-{shard}.h5",
    log:
        "logs/extract/shard-{shard}.log",
    benchmark:
        "results/benchmarks/extract/shard-{shard}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: max(1, config["extract"]["num_workers"])
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 120 * attempt,
        # The speed settings travel as resources, which (unlike params) are no rerun
        # trigger: changing them does not re-extract finished shards.
        extract_batch_size=get_extract_settings(speed=True)["batch_size"],
        extract_num_workers=get_extract_settings(speed=True)["num_workers"],
        extract_device=get_extract_settings(speed=True)["device"],
    params:
        # the weights' content decides, not their modification time (see get_weights_sha256)
        weights_sha256=get_weights_sha256,
        shard_id=lambda wildcards: int(wildcards.shard),
        model=config["model"],
        extract=get_extract_settings,
        preprocess=config["preprocess"],
        layers=config["layers"],
        codes_layer=config["codes_layer"],
    script:
        "../scripts/extract.py"
