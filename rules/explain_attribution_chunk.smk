rule explain_attribution_chunk:
    input:
        images="results/explain/images.csv",
        model_info="results/model/model_info.json",
        classes="results/manifest.classes.json",
        weights=get_weights_input,
    output:
        maps="results/explain/attribution/chunks/{chunk}/maps.h5",
        panels=directory("results/explain/attribution/chunks/{chunk}/panels"),
    log:
        "logs/explain/explain_attribution/chunk-{chunk}.log",
    benchmark:
        "results/benchmarks/explain_attribution_chunk/chunk-{chunk}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        # The speed settings travel as resources, which (unlike params) are no rerun
        # trigger: changing them reruns nothing.
        explain_device=config["explain"]["device"],
        explain_batch_size=config["explain"]["batch_size"],
    params:
        # which images the chunk holds: a change reruns the chunks
        chunk=lambda wildcards: int(wildcards.chunk),
        chunk_size=config["explain"]["chunk_size"],
        attribution=config["explain"]["attribution"],
        model=config["model"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/explain_attribution_chunk.py"
