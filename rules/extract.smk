rule extract:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
    output:
        "results/features/shard-{shard}.h5",
    log:
        "logs/extract/shard-{shard}.log",
    params:
        shard_id=lambda wildcards: int(wildcards.shard),
        extract=get_extract_settings,
        preprocess=config["preprocess"],
        layers=config["layers"],
        codes_layer=config["codes_layer"],
    threads: max(1, config["extract"]["num_workers"])
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/extract.py"
