rule synthesis_adversarial:
    input:
        manifest="results/manifest.csv",
        weights=get_weights_input,
    output:
        panels=report(
            directory("results/synthesis/adversarial/panels"),
            patterns=["{name}.png"],
            caption="../report/synthesis_adversarial.rst",
            category="Synthesis",
        ),
        table="results/synthesis/adversarial/table.csv",
        h5="results/synthesis/adversarial/adversarial.h5",
        summary="results/synthesis/adversarial/summary.json",
    log:
        "logs/synthesis/adversarial.log",
    benchmark:
        "results/benchmarks/synthesis_adversarial.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        adversarial=config["synthesis"]["adversarial"],
        device=config["synthesis"]["device"],
        preprocess=config["preprocess"],
        model=config["model"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/synthesis_adversarial.py"
