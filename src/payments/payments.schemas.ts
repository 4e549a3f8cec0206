// Rules every payment shares, charge or refund.

/** The largest amount, in minor units, that one charge or refund may carry. */
export const MAX_AMOUNT = 99_999_999;
