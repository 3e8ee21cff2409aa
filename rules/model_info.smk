checkpoint model_info:
    input:
        weights=get_weights_input,
    output:
        info="results/model/model_info.json",
    log:
        "logs/model_info.log",
    benchmark:
        "results/benchmarks/model_info.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        # the weights' content decides, not their modification time (see get_weights_sha256)
        weights_sha256=get_weights_sha256,
        model=config["model"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        codes_layer=config["codes_layer"],
    script:
        "../scripts/model_info.py"
