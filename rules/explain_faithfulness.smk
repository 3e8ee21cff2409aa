rule explain_faithfulness:
    input:
        images="results/explain/images.csv",
        maps="results/explain/attribution/maps.h5",
        weights=get_weights_input,
    output:
        scores="results/explain/faithfulness.csv",
        mprt="results/explain/mprt.csv",
        ranking="results/explain/faithfulness/ranking.csv",
        curves=report(
            "results/explain/faithfulness/curves.png",
            caption="../report/explain_faithfulness.rst",
            category="Explanations",
        ),
        summary="results/explain/faithfulness/summary.json",
    log:
        "logs/explain/explain_faithfulness.log",
    benchmark:
        "results/benchmarks/explain_faithfulness.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        # speed settings as resources (no rerun trigger), as extract does
        explain_device=config["explain"]["device"],
        explain_batch_size=config["explain"]["batch_size"],
    params:
        faithfulness=config["explain"]["faithfulness"],
        attribution=config["explain"]["attribution"],
        model=config["model"],
        preprocess=config["preprocess"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/explain_faithfulness.py"
