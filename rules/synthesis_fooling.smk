rule synthesis_fooling:
    input:
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        grid=report(
            "results/synthesis/fooling/grid.png",
            caption="../report/synthesis_fooling.rst",
            category="Synthesis",
        ),
        table="results/synthesis/fooling/table.csv",
        h5="results/synthesis/fooling/fooling.h5",
        summary="results/synthesis/fooling/summary.json",
    log:
        "logs/synthesis/fooling.log",
    benchmark:
        "results/benchmarks/synthesis_fooling.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        fooling=config["synthesis"]["fooling"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
        preprocess=config["preprocess"],
        model=config["model"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/synthesis_fooling.py"
