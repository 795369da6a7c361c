package chdb

// Sessions of a Conn (see Conn): Query spreads statements over ReadSessions, QueryPriority over
// PrioritySessions. Declared for every build (the nochdb one included), since the store sizes its
// read budget by them.
const (
	ReadSessions     = 4
	PrioritySessions = 2
)
