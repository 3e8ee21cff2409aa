rule synthesis_dream:
    input:
        model_info=get_synthesis_model_info("dream"),
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        images=report(
            directory("results/synthesis/dream/images"),
            patterns=["{name}.png"],
            caption="../report/synthesis_dream.rst",
            category="Synthesis",
        ),
        grid="results/synthesis/dream/grid.png",
        h5="results/synthesis/dream/dream.h5",
        summary="results/synthesis/dream/summary.json",
    log:
        "logs/synthesis/dream.log",
    benchmark:
        "results/benchmarks/synthesis_dream.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        dream=config["synthesis"]["dream"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
        layers=get_synthesis_layers("dream"),
        preprocess=config["preprocess"],
        model=config["model"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/synthesis_dream.py"
