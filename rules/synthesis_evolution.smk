rule synthesis_evolution:
    input:
        model_info=get_synthesis_model_info("evolution"),
        manifest="results/manifest.csv",
        checkpoints=get_evolution_checkpoints,
    output:
        evolution="results/synthesis/evolution/evolution.h5",
        strips=report(
            directory("results/synthesis/evolution/strips"),
            patterns=["{name}.png"],
            caption="../report/synthesis_evolution.rst",
            category="Synthesis",
        ),
        summary="results/synthesis/evolution/summary.json",
    log:
        "logs/synthesis/evolution.log",
    benchmark:
        "results/benchmarks/synthesis_evolution.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        checkpoints_sha256=get_evolution_checkpoints_sha256,
        skip_reason=get_evolution_skip_reason,
        model=config["model"],
        preprocess=config["preprocess"],
        layers=get_synthesis_layers("evolution"),
        evolution=config["synthesis"]["evolution"],
        visualisation=config["synthesis"]["visualisation"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
    script:
        "../scripts/synthesis_evolution.py"
