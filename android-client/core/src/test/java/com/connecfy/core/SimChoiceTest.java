package com.connecfy.core;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

/** Which SIM to send from, and when the user must choose one ("ask every time" on a dual-SIM phone). */
public class SimChoiceTest {
    private static final int NONE = SimChoice.DEFAULT;

    private static String decide(int slots, int[] active, int defaultSms, int chosen) {
        SimChoice.Decision d = SimChoice.decide(slots, active, defaultSms, chosen);
        return d.outcome == SimChoice.Outcome.USE ? "use " + d.subscriptionId : d.outcome.toString();
    }

    private static int[] sims(int... ids) {
        return ids;
    }

    @Test
    public void askEveryTimeWithTwoSimsNeedsAChoice() {
        assertEquals(SimChoice.Outcome.NEED_CHOICE.toString(), decide(2, sims(3, 4), NONE, NONE));
        assertEquals("the choice is needed again when the chosen SIM was taken out",
            SimChoice.Outcome.NEED_CHOICE.toString(), decide(2, sims(3, 4), NONE, 7));
        assertEquals("even when another SIM is the default",
            SimChoice.Outcome.NEED_CHOICE.toString(), decide(2, sims(3, 4), 3, 7));
    }

    @Test
    public void aChosenActiveSimIsUsed() {
        assertEquals("use 4", decide(2, sims(3, 4), NONE, 4));
        assertEquals("use 4", decide(2, sims(3, 4), 3, 4));
    }

    @Test
    public void theDefaultSmsSimIsUsedWhenThereIsOne() {
        assertEquals("use 3", decide(2, sims(3, 4), 3, NONE));
    }

    @Test
    public void aSingleSimNeedsNoChoice() {
        assertEquals("use 3", decide(1, sims(3), NONE, NONE));
        assertEquals("use 3", decide(2, sims(3), NONE, NONE));
        assertEquals("the only SIM left, whatever was chosen", "use 3", decide(2, sims(3), NONE, 4));
    }

    @Test
    public void noActiveSimCannotSend() {
        assertEquals(SimChoice.Outcome.NO_SIM.toString(), decide(2, sims(), NONE, NONE));
    }

    @Test
    public void withoutThePermissionToListSims() {
        assertEquals("one slot: the phone's default", "use -1", decide(1, null, NONE, NONE));
        assertEquals("use 3", decide(2, null, 3, NONE));
        assertEquals("a choice made earlier", "use 4", decide(2, null, NONE, 4));
        assertEquals(SimChoice.Outcome.NEED_PERMISSION.toString(), decide(2, null, NONE, NONE));
    }
}
