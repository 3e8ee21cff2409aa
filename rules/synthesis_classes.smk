rule synthesis_classes:
    input:
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        images="results/synthesis/classes/images.h5",
        curves="results/synthesis/classes/curves.png",
        grid=report(
            "results/synthesis/classes/grid.png",
            caption="../report/synthesis_classes.rst",
            category="Synthesis",
        ),
        png=directory("results/synthesis/classes/png"),
        summary="results/synthesis/classes/summary.json",
    log:
        "logs/synthesis/classes.log",
    benchmark:
        "results/benchmarks/synthesis_classes.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        weights_sha256=get_weights_sha256,
        model=config["model"],
        preprocess=config["preprocess"],
        visualisation=config["synthesis"]["visualisation"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
    script:
        "../scripts/synthesis_classes.py"
