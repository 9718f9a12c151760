"""Every explanation's verdict: one word ('supports', 'does not support', 'inconclusive', 'not
applicable') and the sentence with the number and test behind it, so that the report never claims
more than was measured."""

from __future__ import annotations

import numpy as np

# the verdicts, in the report's order, with the question each answers (the report's column heads)
CHECKS = {"evidence": "step size follows evidence", "position": "… beyond the slice's position",
          "deletion": "deletion: largest steps matter more", "deletion_position": "… than the usual positions",
          "centroid": "paths end at their grade's centroid", "order": "centroids in grade order",
          "norm": "||P_t|| follows grade",
          "referral": "uncertainty finds the errors"}
EVIDENCE_P = 0.01  # the correlations (step size/evidence, norm/grade, the centroids' order) must reach this
DELETION_P = 0.05  # and the one-sided tests this: the deletion test, the centroid check's agreement and rise
POSITION_WITHIN = 0.1  # below this share of the evidence's variation within a step index, position and content are one


def _g(x: float) -> str:
    """Two significant figures, without a negative zero."""
    return format(x + 0.0, ".2g")


def verdicts(checks: dict) -> dict:
    """One verdict per reading of a trajectory: (word, sentence), the word one of 'supports',
    'does not support', 'inconclusive' or 'not applicable'. A model that predicts one class for
    every test sequence has no decision to explain, so every check is then not applicable."""
    c, n, d = checks["correlation"], checks["norm"], checks.get("deletion") or {}
    if len(d.get("predicted_classes", [0, 1])) == 1:
        why = (f"the model predicts class {d['predicted_classes'][0]} for every test sequence, so its trajectories "
               "explain no decision")
        return {key: ("not applicable", why) for key in CHECKS}
    out = {}
    if c["rho"] is None:
        out["evidence"] = ("not applicable", "no per-slice evidence is recorded for this dataset")
    elif c["rho"] > 0 and c["p"] < EVIDENCE_P:
        out["evidence"] = ("supports", f"the trajectory moves most on the slices with the most evidence "
                                       f"(ρ = {_g(c['rho'])}, p = {_g(c['p'])}, {c['n_steps']} steps)")
    else:
        out["evidence"] = ("does not support", f"the step size does not rise with the slice's evidence (ρ = {_g(c['rho'])}, "
                                               f"p = {_g(c['p'])}; needs ρ > 0 with p < {EVIDENCE_P})")
    a = checks.get("correlation_position") or {"rho": None}
    if a["rho"] is None:
        out["position"] = ("not applicable", "no per-slice evidence is recorded, or no step index holds more than one "
                                             "step to compare")
    elif a.get("within", 1.0) < POSITION_WITHIN:
        out["position"] = ("inconclusive", f"the evidence sits at the same points of nearly every sequence ({a['within']:.0%} "
                                           f"of its variation lies among the steps at one index), so where a slice lies "
                                           f"cannot be told apart from what it shows (ρ = {_g(a['rho'])}, p = {_g(a['p'])})")
    elif a["rho"] > 0 and a["p"] < EVIDENCE_P:
        out["position"] = ("supports", f"among the steps at the same point of a sequence, the larger ones read the slices "
                                       f"that show more (ρ = {_g(a['rho'])}, p = {_g(a['p'])})")
    else:
        why = (f"among the steps at the same point of a sequence, the step size does not rise with the evidence "
               f"(ρ = {_g(a['rho'])}, p = {_g(a['p'])}; needs ρ > 0 with p < {EVIDENCE_P})")
        if out["evidence"][0] == "supports":
            why += ": the raw correlation comes from where the evidence slices lie in a sequence, not from what they show"
        out["position"] = ("does not support", why)
    if not d.get("n_sequences"):
        out["deletion"] = ("not applicable", "no test sequence has three or more slices, or the test was not run")
    else:
        effect = (f"deleting the largest steps changes the prediction by {_g(d['shift_top'])} (total variation of the class "
                  f"probabilities), as many random slices by {_g(d['shift_random'])} (Wilcoxon p = {_p(d['p_shift'])}, "
                  f"{d['n_sequences']} sequences); signed, the predicted class's probability drops by {_g(d['drop_top'])} "
                  f"against {_g(d['drop_random'])} (p = {_p(d['p_drop'])})")
        out["deletion"] = _deletion_verdict(d["shift_top"], d["shift_random"], d["p_shift"], effect,
                                            "the largest steps matter no more than random slices")
    if d.get("shift_usual") is None:
        out["deletion_position"] = ("not applicable", "the deletion test was not run against the usual positions")
    else:
        effect = (f"deleting this scan's largest steps changes the prediction by {_g(d['shift_top'])}, deleting the slices "
                  f"where the model usually moves most by {_g(d['shift_usual'])} (Wilcoxon p = {_p(d['p_shift_usual'])})")
        if out["deletion"][0] == "does not support":  # a refinement of the deletion test cannot outdo it
            out["deletion_position"] = ("does not support", effect + "; the largest steps matter no more than "
                                                                      "random slices to begin with")
        else:
            word, sentence = _deletion_verdict(d["shift_top"], d["shift_usual"], d["p_shift_usual"], effect,
                                               "where the steps are large matters no more than where they usually are")
            if word == "supports" and out["deletion"][0] != "supports":
                word, sentence = "inconclusive", effect + ", but the deletion test itself is inconclusive"
            out["deletion_position"] = (word, sentence)
    out["referral"] = _referral_verdict(checks.get("referral"))
    out["centroid"] = centroid_verdict(checks.get("centroid"))
    out["order"] = order_verdict(checks.get("centroid"))
    if n["rho"] is None:
        out["norm"] = ("not applicable", "the test sequences hold one grade only")
    elif n["p"] < EVIDENCE_P:
        out["norm"] = ("supports", f"a sequence's mean ||P_t|| changes with its grade (ρ = {_g(n['rho'])}, p = {_g(n['p'])}; "
                                   f"{_nearest(n)})")
    else:
        out["norm"] = ("does not support", f"the mean ||P_t|| does not follow the grade (ρ = {_g(n['rho'])}, "
                                           f"p = {_g(n['p'])}; needs p < {EVIDENCE_P}; {_nearest(n)})")
    return out


def nearest_grade(norm: dict) -> str:
    """The grade whose sequences' mean ||P_t|| is lowest: the grade that stays nearest the start P_0 = 0. Which
    grade that is, the objective leaves to the seed (README, "Which grade sits at the start"), and ||P_t||
    grows away from it, so a seed with the start at the highest grade orders the grades the other way."""
    means = norm["grade_means"]
    return str(min(means, key=means.get))


def _nearest(norm: dict) -> str:
    return f"lowest for grade {nearest_grade(norm)}, the grade nearest the start"


def centroid_verdict(c: dict | None) -> tuple[str, str]:
    """The PCA figure's reading (``trajectories.centroid_approach``): supports when the last state's nearest
    training centroid names the grade more often than chance and the margin to the other grades' centroids
    grows as the path reads (both one-sided at p < DELETION_P)."""
    if not c or not c.get("n_sequences"):
        return ("not applicable", "fewer than two grades among the training trajectories, or no test sequence of "
                                  "two slices or more")
    effect = (f"the last state's nearest training centroid is its own grade's for {c['agreement']:.0%} of "
              f"{c['n_sequences']} test sequences (chance {c['chance']:.0%}, binomial p = {_g(c['p_agreement'])}); the "
              f"margin to the other grades' centroids goes from {_g(c['margin_first'])} at the first state to "
              f"{_g(c['margin_last'])} at the last (Wilcoxon p = {_g(c['p_rise'])})")
    failed = []
    if not c["p_agreement"] < DELETION_P:
        failed.append("the nearest centroid names the grade no more often than chance")
    if not (c["margin_last"] > c["margin_first"] and c["p_rise"] < DELETION_P):
        failed.append("the paths do not head for their own grade's centroid")
    return ("supports", effect) if not failed else ("does not support", effect + ": " + "; ".join(failed))


def order_verdict(c: dict | None) -> tuple[str, str]:
    """Do the grade centroids lie in the order of the grades, as an ordinal grade's would on a path from
    healthy to severe (Spearman of their pairwise distances against the grade gap, at p < EVIDENCE_P)?"""
    if not c or c.get("order_rho") is None:
        return ("not applicable", "fewer than three grades, or no test sequence to check")
    effect = (f"centroids further apart in grade lie further apart (Spearman ρ = {_g(c['order_rho'])}, "
              f"p = {_g(c['order_p'])}, over every pair of grades)")
    if c["order_rho"] > 0 and c["order_p"] < EVIDENCE_P:
        return ("supports", effect)
    return ("does not support", effect + f": needs ρ > 0 with p < {EVIDENCE_P}; some grades' centroids lie nearer "
                                         "grades far from theirs than the grades between")


def every_seed(per_seed: list[tuple[str, str]]) -> tuple[str, str]:
    """A check across seeds that needs no pooling, from each seed's (word, sentence): it holds when it holds
    in every seed it applies to."""
    words = [word for word, _ in per_seed if word != "not applicable"]
    if not words:
        return ("not applicable", per_seed[0][1] if per_seed else "no seed was checked")
    held = sum(w == "supports" for w in words)
    return ("supports" if held == len(words) else "does not support", f"supports in {held} of {len(words)} seeds")


def _p(p: float | None) -> str:
    return "n/a" if p is None else _g(p)


def _deletion_verdict(top: float, other: float, p: float | None, effect: str, otherwise: str) -> tuple[str, str]:
    """Deleting the largest steps against another choice of slices: supports when it changes the prediction
    more at p < DELETION_P, inconclusive when only the mean says so."""
    if top > other and p is not None and p < DELETION_P:
        return ("supports", effect)
    if top > other:
        return ("inconclusive", effect + f": the mean favours the largest steps, but not at p < {DELETION_P}")
    return ("does not support", effect + ": " + otherwise)


def norm_across_seeds(norms: list[dict]) -> tuple[str, str]:
    """Does the ||P_t|| profile separate the grades by more than its seed spread? Each seed's verdict can
    say yes with the opposite sign of another's, and one seed's norms can sit above another's for every
    grade; so the grades' mean norms, averaged over the seeds, must differ by more than a grade's mean norm
    varies between seeds (its sd, averaged over the grades), and every seed must order the grades the same
    way at p < EVIDENCE_P."""
    norms = [n for n in norms if n.get("rho") is not None]
    if len(norms) < 2:
        return ("not applicable", "fewer than two seeds with more than one test grade")
    grades = sorted(set.intersection(*(set(n["grade_means"]) for n in norms)), key=int)
    means = np.array([[n["grade_means"][g] for g in grades] for n in norms])  # seeds x grades
    separation, spread = float(np.ptp(means.mean(0))), float(means.std(0, ddof=1).mean())
    rhos = ", ".join(_g(n["rho"]) for n in norms)
    effect = (f"over {len(norms)} seeds the grades' mean ||P_t|| differ by {_g(separation)} (range of the seed means), "
              f"a grade's mean varies by {_g(spread)} between seeds (sd); ρ with the grade {rhos}; the grade nearest "
              f"the start (lowest mean ||P_t||) {', '.join(nearest_grade(n) for n in norms)}")
    signs = {np.sign(n["rho"]) for n in norms if n["p"] < EVIDENCE_P}
    if len(signs) > 1:
        return ("does not support", effect + ": the seeds disagree on its direction, so the norm carries no reading "
                                             "of the grade that holds beyond one training run")
    if separation > spread and all(n["p"] < EVIDENCE_P for n in norms):
        return ("supports", effect)
    return ("does not support", effect + (f": not every seed orders the grades at p < {EVIDENCE_P}" if separation > spread
                                          else ": the grades differ less than the seeds do"))


def _referral_verdict(r: dict | None) -> tuple[str, str]:
    """Does the MC-dropout uncertainty rank the wrong decisions first (one-sided Mann-Whitney, p < DELETION_P)?"""
    if not r:
        return ("not applicable", "the uncertainty was not measured (explain.uncertainty.passes is 0)")
    if r["error_auroc"] is None:
        return ("not applicable", f"the model is {'right' if r['n_wrong'] == 0 else 'wrong'} on every test sequence: "
                                  "there is no error for the uncertainty to find")
    first, last = r["curve"][0], r["curve"][-1]
    effect = (f"accuracy {_g(first['accuracy'])} on all {first['n_kept']} test sequences, {_g(last['accuracy'])} on the "
              f"{last['n_kept']} left when the most uncertain {last['referred']:.0%} are referred; the uncertainty tells its "
              f"{r['n_wrong']} wrong decisions from the right ones with AUROC {_g(r['error_auroc'])} "
              f"(Mann-Whitney p = {_g(r['error_p'])}, {r['passes']} MC-dropout passes)")
    rises = last["accuracy"] > first["accuracy"]  # referring must help, not only rank errors a little higher
    if r["error_auroc"] > 0.5 and r["error_p"] < DELETION_P and rises:
        return ("supports", effect)
    if r["error_auroc"] > 0.5 and rises:
        return ("inconclusive", effect + f": the wrong decisions are more uncertain on average, but not at p < {DELETION_P}")
    return ("does not support", effect + ": the uncertainty does not rank the wrong decisions first")




def decoding_verdict(states: dict) -> tuple[str, str]:
    """Do the decoded states carry the model's belief? The re-encoded decode of z_sem must agree with the
    PRM's grade more often than two independent graders would (one-sided binomial, p < DELETION_P)."""
    if not states.get("n_sequences"):
        return ("not applicable", "no test sequence was decoded")
    effect = (f"re-encoded and graded by the stage-1 classifier, the decode of z_sem agrees with the PRM's grade on "
              f"{states['agreement_last']:.0%} of {states['n_sequences']} test sequences (chance {states['chance_last']:.0%}, "
              f"binomial p = {_g(states['p_last'])}); over all {states['n_steps']} steps {states['agreement']:.0%}")
    if states["agreement_last"] > states["chance_last"] and states["p_last"] < DELETION_P:
        return ("supports", effect)
    if states["agreement_last"] > states["chance_last"]:
        return ("inconclusive", effect + f": above chance, but not at p < {DELETION_P}")
    return ("does not support", effect + ": the decoded images do not show what the model decided")


def counterfactual_verdict(result: dict) -> tuple[str, str]:
    """Are one-grade counterfactuals valid: does the re-encoded decode move the requested way more often
    than not (one-sided binomial against 1/2, p < DELETION_P)?"""
    one = result.get("moves", {}).get(1) or {}
    if not one.get("n_reached"):
        return ("not applicable", "no test sequence's grade changed along the grade direction")
    effect = (f"{one['n_valid']} of {one['n_reached']} one-grade counterfactuals ({one['valid_share']:.0%}) move the "
              f"stage-1 classifier's grade the requested way (binomial p = {_g(one['p'])}"
              + (f"; {one['n_requested'] - one['n_reached']} never reached the grade" if one["n_requested"] > one["n_reached"] else "")
              + ")")
    if one["valid_share"] > 0.5 and one["p"] < DELETION_P:
        return ("supports", effect)
    if one["valid_share"] > 0.5:
        return ("inconclusive", effect + f": more often than not, but not at p < {DELETION_P}")
    return ("does not support", effect + ": the counterfactuals fail their validity check")
