rule synthesis_inversion:
    input:
        model_info=get_synthesis_model_info("inversion"),
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        inversion="results/synthesis/inversion/inversion.h5",
        figure=report(
            "results/synthesis/inversion/inversion.png",
            caption="../report/synthesis_inversion.rst",
            category="Synthesis",
        ),
        summary="results/synthesis/inversion/summary.json",
    log:
        "logs/synthesis/inversion.log",
    benchmark:
        "results/benchmarks/synthesis_inversion.tsv"
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
        layers=get_synthesis_layers("inversion"),
        inversion=config["synthesis"]["inversion"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
    script:
        "../scripts/synthesis_inversion.py"
