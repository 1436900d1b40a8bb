package com.connecfy.core;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

/**
 * Which SIM to send from, and when the user must choose one ("ask every time" on a
 * dual-SIM phone); a message naming a SIM slot goes from that slot's SIM or fails.
 */
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

    /** Subscriptions 3 and 4 sit in slots 0 and 1 (0-based, as the phone counts). */
    private static final SimSlot.Lookup SLOTS_3_4 = new SimSlot.Lookup() {
        @Override
        public Integer slotOf(int subscriptionId) {
            return subscriptionId == 3 ? 0 : subscriptionId == 4 ? 1 : null;
        }
    };

    private static String forTask(Integer simSlot, int slots, int[] active, int defaultSms, int chosen,
            SimSlot.Lookup slotOf) {
        SimChoice.Decision d = SimChoice.forTask(simSlot, slots, active, defaultSms, chosen, slotOf);
        switch (d.outcome) {
            case USE:
                return "use " + d.subscriptionId + " from SIM " + d.simSlot;
            case SLOT_UNAVAILABLE:
                return d.error;
            default:
                return d.outcome.toString();
        }
    }

    @Test
    public void aMessageNamingASlotGoesFromTheSimInThatSlot() {
        assertEquals("use 4 from SIM 2", forTask(2, 2, sims(3, 4), 3, NONE, SLOTS_3_4));
        assertEquals("whatever SIM the user chose", "use 3 from SIM 1", forTask(1, 2, sims(3, 4), NONE, 4, SLOTS_3_4));
        assertEquals("even with \"ask every time\"", "use 4 from SIM 2", forTask(2, 2, sims(3, 4), NONE, NONE,
            SLOTS_3_4));
    }

    @Test
    public void aMessageNamingASlotWithoutASimFailsRatherThanGoFromAnother() {
        assertEquals("sim_slot_unavailable (SIM 2: no active SIM in that slot)",
            forTask(2, 2, sims(3), 3, NONE, SLOTS_3_4));
        assertEquals("sim_slot_unavailable (SIM 2: the phone has one SIM slot)",
            forTask(2, 1, sims(3), 3, NONE, SLOTS_3_4));
        assertEquals("sim_slot_unavailable (SIM 3: the phone has 2 SIM slots)",
            forTask(3, 2, sims(3, 4), 3, NONE, SLOTS_3_4));
        assertEquals("a sim_slot that did not read as a number",
            "sim_slot_unavailable (SIM 0: the phone has 2 SIM slots)", forTask(0, 2, sims(3, 4), 3, NONE, SLOTS_3_4));
        assertEquals("sim_slot_unavailable (SIM 1: no active SIM in that slot)",
            forTask(1, 2, sims(), NONE, NONE, SLOTS_3_4));
        assertEquals("a SIM whose slot the phone does not say is not taken for any slot",
            "sim_slot_unavailable (SIM 1: no active SIM in that slot)", forTask(1, 2, sims(3, 4), 3, NONE, null));
    }

    @Test
    public void withoutThePermissionOnlyTheSimTheAppWouldUseCanBePlaced() {
        assertEquals("the default SMS SIM sits in the slot named", "use 4 from SIM 2",
            forTask(2, 2, null, 4, NONE, SLOTS_3_4));
        assertEquals("sim_slot_unavailable (SIM 1: the SIMs cannot be listed without the phone permission)",
            forTask(1, 2, null, 4, NONE, SLOTS_3_4));
        assertEquals("one slot: the phone's default SIM is in it", "use -1 from SIM 1",
            forTask(1, 1, null, NONE, NONE, null));
    }

    @Test
    public void aMessageNamingNoSlotGoesFromTheAppsSimAndSaysWhichSlotThatIs() {
        assertEquals("use 3 from SIM 1", forTask(null, 2, sims(3, 4), 3, NONE, SLOTS_3_4));
        assertEquals("use 4 from SIM 2", forTask(null, 2, sims(3, 4), 3, 4, SLOTS_3_4));
        assertEquals("a slot the phone does not say is not guessed", "use 4 from SIM null",
            forTask(null, 2, sims(3, 4), 3, 4, null));
        assertEquals("use -1 from SIM 1", forTask(null, 1, null, NONE, NONE, null));
        assertEquals(SimChoice.Outcome.NEED_CHOICE.toString(), forTask(null, 2, sims(3, 4), NONE, NONE, SLOTS_3_4));
    }
}
