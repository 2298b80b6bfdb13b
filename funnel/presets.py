"""The stages of the two preset funnels, as API.md fixes them. Names are data once stored
(editors may rename them, e.g. into German); keys stay."""

PRESET_STAGES = {
    "aida": [
        ("attention", "Attention"),
        ("interest", "Interest"),
        ("desire", "Desire"),
        ("action", "Action"),
    ],
    "journey": [
        ("awareness", "Awareness"),
        ("consideration", "Consideration"),
        ("purchase", "Purchase"),
        ("retention", "Retention"),
        ("advocacy", "Advocacy"),
    ],
}
