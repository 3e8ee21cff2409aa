rule config_used:
    output:
        config="results/config.yaml",
    log:
        "logs/config_used.log",
    benchmark:
        "results/benchmarks/config_used.tsv"
    params:
        # the whole validated config but the speed settings: any other change rewrites it
        config=get_config_used,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=lambda wildcards, attempt: 5 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/config_used.py"
