rule synthesis_units:
    input:
        chunk_images=get_chunk_outputs("synthesis_units", "images"),
        chunk_png=get_chunk_outputs("synthesis_units", "png"),
        shards=get_shard_paths,
        shard_index="results/features/index.json",
    output:
        images="results/synthesis/units/images.h5",
        curves="results/synthesis/units/curves.png",
        png=report(
            directory("results/synthesis/units/png"),
            patterns=["{name}.png"],
            caption="../report/synthesis_units.rst",
            category="Synthesis",
        ),
        summary="results/synthesis/units/summary.json",
    log:
        "logs/synthesis/units.log",
    benchmark:
        "results/benchmarks/synthesis_units.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        visualisation=config["synthesis"]["visualisation"],
        preprocess=config["preprocess"],
    script:
        "../scripts/synthesis_units.py"
