"""The unified patient record: one person across PMS, EMR, lab and payers, built from ADT, SIU, ORU and DFT."""
