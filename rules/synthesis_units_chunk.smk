rule synthesis_units_chunk:
    input:
        model_info=get_synthesis_model_info("units"),
        weights=get_weights_input,
        stats="results/units/stats.csv",
    output:
        images="results/synthesis/units/chunks/{chunk}/images.h5",
        png=directory("results/synthesis/units/chunks/{chunk}/png"),
    log:
        "logs/synthesis/units/chunk-{chunk}.log",
    benchmark:
        "results/benchmarks/synthesis_units_chunk/chunk-{chunk}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        # which unit batches the chunk holds: a change reruns the chunks
        chunk=lambda wildcards: int(wildcards.chunk),
        chunk_size=config["synthesis"]["chunk_size"],
        weights_sha256=get_weights_sha256,
        model=config["model"],
        preprocess=config["preprocess"],
        layers=get_synthesis_layers("units"),
        visualisation=config["synthesis"]["visualisation"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
    script:
        "../scripts/synthesis_units_chunk.py"
