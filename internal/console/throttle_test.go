package console

import (
	"testing"
	"time"
)

func TestThrottleForgetsAfterTheWindow(t *testing.T) {
	th := newThrottle()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 10 {
		th.failed("203.0.113.1", now)
	}
	if _, ok := th.allowed("203.0.113.1", now.Add(59*time.Second)); ok {
		t.Error("allowed within the minute after 10 failures")
	}
	if _, ok := th.allowed("203.0.113.1", now.Add(time.Minute)); !ok {
		t.Error("still refused once the minute ended")
	}
}
