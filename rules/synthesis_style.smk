rule synthesis_style:
    input:
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        texture=report(
            "results/synthesis/style/texture.png",
            caption="../report/synthesis_style.rst",
            category="Synthesis",
        ),
        transfer=report(
            "results/synthesis/style/transfer.png",
            caption="../report/synthesis_style.rst",
            category="Synthesis",
        ),
        losses_png="results/synthesis/style/losses.png",
        losses_csv="results/synthesis/style/losses.csv",
        h5="results/synthesis/style/style.h5",
        summary="results/synthesis/style/summary.json",
    log:
        "logs/synthesis/style.log",
    benchmark:
        "results/benchmarks/synthesis_style.tsv"
    params:
        synthesis=config["synthesis"],
        layers=config["layers"],
        preprocess=config["preprocess"],
        model=config["model"],
        weights_sha256=get_weights_sha256,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/synthesis_style.py"
