"""The unified patient record: one person across PMS, EMR, lab and payers, from ADT, SIU, ORU and DFT."""
