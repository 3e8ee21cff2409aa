rule config_used:
    output:
        config="results/config.yaml",
    log:
        "logs/config_used.log",
    benchmark:
        "results/benchmarks/config_used.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=lambda wildcards, attempt: 5 * attempt,
    params:
        # the whole validated config but the speed settings: any other change rewrites it
        config=get_config_used,
    script:
        "../scripts/config_used.py"
