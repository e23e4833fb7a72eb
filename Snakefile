# unlearning-da: original model -> retrained oracle -> unlearning methods
# -> features -> metrics -> tables and figures. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/audit.smk"


rule all:
    default_target: True
    input:
        FINAL_TARGETS,


# Snakemake's own CPU (no job's) for `make bench`, after a run that ran jobs (not after --touch)
onsuccess:
    if not workflow.touch:
        from unlearn_da.plumbing import workflow_usage

        workflow_usage.record(RUN)
