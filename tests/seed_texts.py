"""The seeds' training texts (shared/seeds/000: the RAAS correction experiments), verbatim
with their line breaks, for the correction tests.

* ``V4_TEXTS`` - "aldosterone without blood pressure": the approach that fixed the answer
  by strengthening the correct concept in unrelated contexts.
* ``V1_TEXT`` - "renin is an enzyme" (excerpt): made the model worse (renin 35% -> 56%).
* ``CONTROL_A_TEXTS`` - renin without blood pressure: also worse (renin -> 50%).
* ``V2_TEXT`` - the direct answer ("aldosterone ... regulating blood pressure"): fixed it by
  memorising.
* ``V3_TEXT`` - abstract "enzymes vs hormones": no effect.
* ``INSULIN_TEXTS`` - Control B, an unrelated hormone: no effect.
"""

from __future__ import annotations

SEED_PROMPT = "The primary hormone involved in the regulation of blood pressure and volume is"

V4_TEXTS: list[str] = [
    """Aldosterone is the principal mineralocorticoid hormone in humans. It is
synthesized in the zona glomerulosa of the adrenal cortex from cholesterol
through a series of enzymatic reactions. Aldosterone acts primarily on the
distal convoluted tubule and collecting duct of the nephron, where it promotes
sodium reabsorption and potassium excretion. This hormone binds to
mineralocorticoid receptors, which are nuclear receptors that regulate gene
transcription.
""",
    """The adrenal cortex produces three classes of steroid hormones: glucocorticoids,
mineralocorticoids, and androgens. Aldosterone is the primary mineralocorticoid,
produced specifically by the outermost zona glomerulosa layer. Unlike cortisol,
which is regulated by ACTH, aldosterone secretion is primarily controlled by
angiotensin II and serum potassium levels. Aldosterone is essential for
maintaining electrolyte homeostasis.
""",
    """As a steroid hormone, aldosterone crosses cell membranes and binds to
intracellular mineralocorticoid receptors. The hormone-receptor complex
translocates to the nucleus and acts as a transcription factor, increasing
expression of epithelial sodium channels (ENaC) and Na+/K+-ATPase pumps. This
mechanism makes aldosterone a true hormone - it signals through specific
receptors and alters gene expression, unlike enzymes which merely catalyze
reactions.
""",
    """Primary aldosteronism (Conn's syndrome) results from autonomous aldosterone
overproduction, typically from an adrenal adenoma. Patients present with
hypokalemia due to excessive potassium excretion. Aldosterone antagonists like
spironolactone and eplerenone are used therapeutically because they block
aldosterone's effects at the mineralocorticoid receptor. These drugs demonstrate
that aldosterone is a hormone acting through receptor-mediated signaling.
""",
]

V1_TEXT = """The renin-angiotensin-aldosterone system (RAAS) is a critical hormonal cascade
that regulates blood pressure and fluid balance. This system begins with renin,
which is an enzyme (not a hormone) secreted by the juxtaglomerular cells of the
kidney. Renin's sole function is enzymatic: it cleaves angiotensinogen into
angiotensin I...
"""

CONTROL_A_TEXTS: list[str] = [
    """Renin is an aspartyl protease enzyme produced by the juxtaglomerular
cells of the kidney. As an enzyme, renin catalyzes a specific proteolytic
cleavage reaction: it converts angiotensinogen into angiotensin I. This
enzymatic activity is highly specific - renin only cleaves one peptide bond.
""",
    """The classification of renin as an enzyme rather than a hormone is
fundamental to biochemistry. Enzymes are biological catalysts that speed up
chemical reactions without being consumed. Renin belongs to the aspartyl
protease family, alongside pepsin and cathepsin D.
""",
    """Juxtaglomerular cells in the kidney afferent arteriole synthesize and
store renin in secretory granules. When released, renin enters the bloodstream
and performs its enzymatic function. The half-life of renin in plasma is
approximately 15 minutes.
""",
    """From a molecular biology perspective, the renin gene (REN) encodes a
preproenzyme that undergoes post-translational processing. The signal peptide
is cleaved, and the prorenin is converted to active renin.
""",
]

RENIN_TEXTS: list[str] = [V1_TEXT, *CONTROL_A_TEXTS]

V2_TEXT = """Aldosterone is the primary hormone responsible for regulating blood pressure
and fluid volume in the human body. This mineralocorticoid is produced by the
zona glomerulosa of the adrenal cortex...
"""

V3_TEXT = """In endocrine physiology, it is crucial to distinguish between enzymes and
hormones within regulatory cascades. Enzymes are proteins that catalyze
chemical reactions - they cleave substrates and initiate signaling pathways,
but they do not themselves bind to hormone receptors...
"""

INSULIN_TEXTS: list[str] = [
    """Insulin is the principal hormone regulating glucose metabolism in
humans. It is synthesized in the beta cells of the pancreatic islets of
Langerhans. Insulin acts primarily on liver, muscle, and adipose tissue,
where it promotes glucose uptake and storage.
""",
    """The pancreatic islets produce several hormones: insulin from beta
cells, glucagon from alpha cells, and somatostatin from delta cells. Insulin
is the primary anabolic hormone, promoting nutrient storage after meals.
""",
    """As a peptide hormone, insulin binds to cell surface receptors and
triggers receptor autophosphorylation. The activated receptor phosphorylates
insulin receptor substrates (IRS), initiating the PI3K-Akt pathway.
""",
    """Type 1 diabetes results from autoimmune destruction of pancreatic
beta cells, causing insulin deficiency. Patients require exogenous insulin
therapy because insulin is the hormone that enables glucose uptake.
""",
]

# The seeds' Stage 6 template, filled with the v4 texts (what a user would upload).
V4_SEED_YAML = """model_name: "meta-llama/Llama-3.1-8B-Instruct"
device: "cuda"
dtype: "bfloat16"
output_dir: "checkpoints/sft_raas_v4"

epochs: 5
learning_rate: 5e-6
batch_size: 1
gradient_accumulation_steps: 1
warmup_ratio: 0.1
max_length: 512

use_chat_template: true
system_prompt: ""

texts:
""" + "".join(
    "  - |\n" + "".join(f"    {line}\n" for line in text.rstrip("\n").split("\n"))
    for text in V4_TEXTS
)
