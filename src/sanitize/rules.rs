//! The injection rule table: one entry per technique, with its family and weight.
//!
//! Data, kept apart from the detector that compiles and runs it (`detect.rs`), so the code that
//! scores a prompt reads on its own and the table can grow without burying it.

use serde::Serialize;

/// The rule families. Their names are the `categories` of a 422 and the `category` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    InstructionOverride,
    PromptExtraction,
    PersonaJailbreak,
    RoleInjection,
    RefusalSuppression,
    CompletionLeak,
    SecretSolicitation,
    Exfiltration,
    ToolHijack,
    EncodedPayload,
    Obfuscation,
    MultilingualOverride,
    FictionalFraming,
    PayloadSplitting,
    Malware,
    SafetyBypass,
    ContextReset,
    TokenFlood,
    HiddenCharacters,
    /// The learned stage (`learned.rs`), not a rule: its evidence counts as one more family.
    Classifier,
    /// A comment or string literal of pasted code that speaks to the assistant (`code.rs`).
    CodeInstruction,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::InstructionOverride => "instruction_override",
            Category::PromptExtraction => "prompt_extraction",
            Category::PersonaJailbreak => "persona_jailbreak",
            Category::RoleInjection => "role_injection",
            Category::RefusalSuppression => "refusal_suppression",
            Category::CompletionLeak => "completion_leak",
            Category::SecretSolicitation => "secret_solicitation",
            Category::Exfiltration => "exfiltration",
            Category::ToolHijack => "tool_hijack",
            Category::EncodedPayload => "encoded_payload",
            Category::Obfuscation => "obfuscation",
            Category::MultilingualOverride => "multilingual_override",
            Category::FictionalFraming => "fictional_framing",
            Category::PayloadSplitting => "payload_splitting",
            Category::Malware => "malware",
            Category::SafetyBypass => "safety_bypass",
            Category::ContextReset => "context_reset",
            Category::TokenFlood => "token_flood",
            Category::HiddenCharacters => "hidden_characters",
            Category::Classifier => "classifier",
            Category::CodeInstruction => "code_instruction",
        }
    }
}

pub(super) struct Rule {
    pub category: Category,
    pub weight: f64,
    pub pattern: &'static str,
}

const fn rule(category: Category, weight: f64, pattern: &'static str) -> Rule {
    Rule {
        category,
        weight,
        pattern,
    }
}

use Category as C;

// Shared vocabulary, spliced into the patterns below.
macro_rules! override_verb {
    () => {
        r"(?:ignore|ignoring|disregard|forget|forgetting|skip|override|overrule|bypass|abandon|drop|neglect|discard|dismiss|erase|delete|clear|reset|cancel|remove|set aside|throw away|do not follow|don'?t follow|stop following|no longer follow)"
    };
}
macro_rules! prior {
    () => {
        r"(?:previous|prior|preceding|above|earlier|former|initial|original|old|foregoing|given|provided|system|developer|before|so far)"
    };
}
/// Words that point at instructions only when the noun is unmistakable ("all rules").
macro_rules! prior_weak {
    () => {
        r"(?:all|every|these|those|my|your|the|any|of)"
    };
}
macro_rules! directive {
    () => {
        r"(?:instructions?|instructed|instuctions?|directions?|directives?|rules|prompts?|orders|guidelines?|guidance|tasks?|commands|context|information|info|constraints|restrictions|programming|training|conversations?|messages?|text|everything|anything|requests?|assignments?|polic(?:y|ies)|thoughts|knowledge|memor(?:y|ies))"
    };
}
macro_rules! directive_core {
    () => {
        r"(?:instructions?|directions|directives?|rules|prompts?|orders|guidelines?|guidance|tasks|programming|training|constraints|restrictions|polic(?:y|ies)|assignments?)"
    };
}
macro_rules! reveal_verb {
    () => {
        r"(?:reveal|show|print|repeat|output|display|tell|give|list|spell|dump|leak|share|disclose|divulge|recite|echo|return|write (?:out|down)|type out|copy|paste|summari[sz]e|translate|rephrase|paraphrase|encode|convert|explain|describe|read (?:back|out)|what (?:are|is|were|was)|what'?s)"
    };
}
/// Verbs that ask for a secret to be handed over (not "explain" or "validate").
macro_rules! hand_over {
    () => {
        r"(?:(?:reveal|show|print|repeat|output|display|tell|give|spell|dump|leak|share|disclose|divulge|recite|translate|rephrase|paraphrase|encode|encrypt|whisper|communicate)(?:s|es|ed|ing)?|say (?:me|us)|tell|write (?:out|down)|type out|hint at|what (?:is|was)|what'?s)"
    };
}
macro_rules! secret_noun {
    () => {
        r"(?:pass ?words?|pass ?phrases?|pass ?codes?|secret (?:words?|keys?|codes?|phrases?|values?)|access codes?|magic words?|code ?words?|(?:the|your|his|her|its|their|my|our) secret|api ?keys?|credentials?|private keys?)"
    };
}
/// What may follow a secret noun in a request to hand it over; "password field" or "password
/// hash" are UI and code, not the secret (the regex crate has no look-ahead, so this lists the
/// continuations that keep the noun the object).
macro_rules! noun_end {
    () => {
        r#"(?:\s*(?:[.?!,;:"')\]]|$)|\s+(?:is|was|to|for|now|please|again|backwards?|reversed|in|with|letter|one|first|and|but|so|then|without|you|that|which|here|right|of|from|by|will|would|could|can|has|had))"#
    };
}

/// The rule table. Weights: 0.75+ is a technique with no benign reading in a code request;
/// 0.5–0.7 is strong alone; below 0.5 needs corroboration.
pub(super) static RULES: &[Rule] = &[
    // --- instruction override ---
    rule(
        C::InstructionOverride,
        0.8,
        concat!(
            r"\b",
            override_verb!(),
            r"\b(?:\W+\w+){0,3}?\W+",
            prior!(),
            r"\b(?:\W+\w+){0,4}?\W+",
            directive!(),
            r"\b"
        ),
    ),
    rule(
        C::InstructionOverride,
        0.75,
        concat!(
            r"\b",
            override_verb!(),
            r"\b(?:\W+\w+){0,2}?\W+",
            prior_weak!(),
            r"\b(?:\W+\w+){0,2}?\W+",
            directive_core!(),
            r"\b"
        ),
    ),
    rule(
        C::InstructionOverride,
        0.75,
        concat!(
            r"\b",
            override_verb!(),
            r"\s+(?:all\s+(?:of\s+)?)?(?:the\s+|that\s+|what\s+(?:was|is)\s+)?(?:above|previous|preceding|prior|foregoing|earlier)\b"
        ),
    ),
    rule(
        C::InstructionOverride,
        0.8,
        concat!(
            r"\b",
            override_verb!(),
            r"\s+(?:all|everything|anything)\s+(?:(?:that\s+)?(?:you\s+)?(?:were|was|have been|i)?\s*(?:told|said|given|instructed|know|knew|learn|learned|learnt|discussed|heard|read|saw|have seen|were taught)|(?:we|i|you)\s+(?:have\s+)?(?:discussed|said|talked about|covered|wrote|typed)|(?:above|before|previous(?:ly)?|prior|so far|said|else)|\S*\s*(?:before|above|earlier|previous|prior))\b"
        ),
    ),
    rule(
        C::InstructionOverride,
        0.6,
        r"\b(?:new|updated|real|actual|true|different|secret|hidden|additional|override|admin(?:istrator)?|developer|system|priority)\s+(?:instructions?|directives?|orders?|rules?|commands?|task)\s*(?::|follow|are|is|have|below|from now|supersede|take precedence)",
    ),
    rule(
        C::InstructionOverride,
        0.55,
        r"\bfrom now(?: on)?,? (?:you|u)\b|\bfrom now on\b|\bhenceforth\b|\bfrom this (?:moment|point) (?:on|forward)\b|\bstarting now,? you\b",
    ),
    rule(
        C::InstructionOverride,
        0.6,
        r"\b(?:instead|rather),? (?:of (?:that|doing|following)[^.]{0,40},? )?(?:just |only )?(?:say|print|write|output|respond with|reply with|answer with)\b",
    ),
    rule(
        C::InstructionOverride,
        0.55,
        r"\b(?:override|disregard|ignore)\b\W+(?:all\W+)?(?:instructions|rules|commands|directives|protocols?|safeguards?)\b",
    ),
    rule(
        C::InstructionOverride,
        0.6,
        r"\b(?:do not|don'?t|never)\s+(?:follow|obey|listen to|comply with|adhere to)\s+(?:the|your|any|those|these)\s+(?:\w+\s+)?(?:instructions|rules|guidelines|directives|orders)",
    ),
    rule(
        C::InstructionOverride,
        0.55,
        r"\b(?:you|u)\s+(?:must|will|shall|should|have to)\s+(?:now\s+)?(?:only\s+)?(?:obey|follow|comply with)\s+(?:me|my|the following|these|this)\b",
    ),
    rule(
        C::InstructionOverride,
        0.5,
        r"\b(?:the above|previous|prior|preceding)\s+(?:instructions?|rules?|text|prompt|directions?|messages?)\s+(?:(?:is|are|was|were)\s+)?(?:no longer|not|null|void|cancel+ed|obsolete|outdated|invalid|irrelevant|fake|a test|wrong)",
    ),
    // --- system-prompt or hidden-instruction extraction ---
    rule(
        C::PromptExtraction,
        0.75,
        concat!(
            r"\b",
            reveal_verb!(),
            r"\b(?:\W+\w+){0,5}?\W+(?:system|initial|original|hidden|secret|internal|first|previous|pre-?prompt|full|entire|whole|complete|exact|above|your|the ai'?s|developer)\W+(?:\w+\W+){0,2}?(?:prompts?|instructions?|directives?|guidelines?|rules|configuration|config|messages?|context|programming|settings|commands?)\b"
        ),
    ),
    rule(
        C::PromptExtraction,
        0.7,
        r"\b(?:system|initial|hidden|secret|original|pre)[ _-]?(?:prompt\w*|instructions?|message|directives?)\b",
    ),
    rule(
        C::PromptExtraction,
        0.6,
        r"\b(?:what|everything|all|the text|the words?|the content|the instructions?|the rules?|anything|the lines?|the sentences?|the message|the prompt)\s+(?:that\s+)?(?:(?:is|are|was|were)\s+)?(?:(?:written|stated|said|given|provided|mentioned|listed|located|contained|you (?:were|have been) (?:given|told))\s+)?(?:above|before this|prior to this|earlier|at the (?:beginning|start|top))\b",
    ),
    rule(
        C::PromptExtraction,
        0.3,
        r"\b(?:your|the)\s+(?:(?:initial|original|first|basic|core|secret|hidden|guard|security|internal|underlying)\s+)+(?:instructions?|rules|prompt|directives?|guidelines|programming|configuration)\b",
    ),
    rule(
        C::PromptExtraction,
        0.55,
        r"\b(?:what|which)\s+(?:are|were|is)\s+(?:your|the)\s+(?:\w+\s+)?(?:instructions|rules|directives|guidelines|orders)\b",
    ),
    rule(
        C::PromptExtraction,
        0.55,
        r"\b(?:repeat|recite|print|output|show|display|copy)\s+(?:back\s+|out\s+)?(?:everything|all(?: of it| the text)?|the (?:text|words|lines|content|message|prompt|instructions|rules)|what(?:ever)?(?: is| was)? written|it)\b[^.\n]{0,30}\b(?:above|before|so far|verbatim|word for word|in full)\b",
    ),
    rule(
        C::PromptExtraction,
        0.6,
        r"\b(?:your|the)\s+(?:prompt|instructions)\s+(?:so far|above|verbatim|in full)\b",
    ),
    // --- persona jailbreaks ---
    rule(
        C::PersonaJailbreak,
        0.8,
        r"\b(?:dan|stan|dude|aim|mongo tom|betterdan|evil ?bot|badgpt|chaosgpt|freedomgpt|antigpt|devmode)\b[^\n]{0,80}\b(?:do anything|no (?:rules|restrictions|limits|filters)|jailbr|unfiltered|unrestricted|amoral|not bound|broken free|free from)",
    ),
    rule(
        C::PersonaJailbreak,
        0.85,
        r"\bdo anything now\b|\bdan mode\b|\bunlocked mode\b|\bunfiltered mode\b|\b(?:developer|dev) mode (?:enabled|output|response|policies)\b|\b(?:with|featuring|in|enable|activate) (?:the )?(?:developer|dev) mode\b[^.\n]{0,80}\b(?:chatgpt|ai|llm|model|assistant|you)\b",
    ),
    rule(
        C::PersonaJailbreak,
        0.35,
        r"\bjailbr(?:eak|oken)\w*\b|\bdeveloper mode\b",
    ),
    rule(
        C::PersonaJailbreak,
        0.6,
        r"\b(?:you are|you're|u r|act as|acting as|become|behave as|behave like|pretend (?:to be|you are|you're)|roleplay(?:ing)? as|role-play(?:ing)? as|simulate|play the role of|respond as|answer as|you will be|you will act as|you'll act as|operate as)\b[^.\n]{0,60}\b(?:unfiltered|uncensored|unrestricted|unlimited|amoral|immoral|unethical|evil|rogue|without (?:any )?(?:restrictions|limits|filters|morals|ethics|rules|guidelines)|no (?:restrictions|limits|filters|morals|ethics|rules|guidelines|boundaries)|not bound by|free of all|toxic|foul-mouthed|malicious|an? ai (?:that|which|who) (?:can|will|does))",
    ),
    rule(
        C::PersonaJailbreak,
        0.45,
        r"\byou are (?:now|no longer|going to be|about to)\b|\byour (?:new )?name is now\b|\byou (?:will|shall) (?:now )?(?:act|behave|respond|roleplay|pretend)\b|\bnow you are\b|\bfrom now on,? you\b",
    ),
    rule(
        C::PersonaJailbreak,
        0.6,
        r"\b(?:chat ?gpt|gpt|claude|the (?:ai|assistant|model|bot))\b[^.\n]{0,40}\b(?:with no|without|free of|free from|liberated from|broken free of)\b[^.\n]{0,30}\b(?:restrictions|filters|limits|guidelines|rules|censorship|morals|ethics)",
    ),
    rule(
        C::PersonaJailbreak,
        0.55,
        r"\b(?:no|without any|doesn'?t have any|does not have any|has no|have no|free from|lacks?)\s+(?:\w+\s+){0,2}(?:moral|ethical|ethic|content)\s*(?:or\s+(?:moral|ethical)\s+)?(?:guidelines|principles|restrictions|boundaries|filters|limits|compass|policies|standards|obligations|code)",
    ),
    rule(
        C::PersonaJailbreak,
        0.35,
        r"\b(?:opposite|evil|dark|shadow|unhinged|uncensored|unfiltered|alter ego|twin|second personality)\b[^.\n]{0,30}\b(?:ai|assistant|chatbot|bot|version|personality|mode|self)\b",
    ),
    rule(
        C::PersonaJailbreak,
        0.5,
        r"\[?\s*(?:🔓|🔒)\s*(?:jailbreak|classic|developer|unlocked)",
    ),
    // --- role and delimiter injection ---
    rule(
        C::RoleInjection,
        0.85,
        r"<\|\s*(?:im_start|im_end|endoftext|system|user|assistant|eot_id|start_header_id|end_header_id|begin_of_text)\s*\|>|\[/?inst\]|<</?sys>>|</?\s*(?:system|sys|instructions?|admin|developer)\s*>|<\s*/\s*(?:user|human|context|prompt|document)\s*>",
    ),
    rule(
        C::RoleInjection,
        0.7,
        r"(?m)^\s*#{1,6}\s*(?:system|instructions?|new instructions?|admin|developer|assistant)\b\s*(?::|$)|(?m)^\s*\[?(?:system|admin(?:istrator)?|developer|root|sudo)\]?\s*(?:message|prompt|override|note|instruction)?\s*:",
    ),
    rule(
        C::RoleInjection,
        0.6,
        r"(?m)^\s*(?:assistant|ai|gpt|chatgpt|claude|bot)\s*:\s*\S[^\n]*\n(?:[^\n]*\n){0,6}?\s*(?:user|human|me)\s*:",
    ),
    rule(
        C::RoleInjection,
        0.55,
        r"\b(?:administrator|admin|system|root|sudo|developer|security|maintenance)\s+(?:override|mode|access|command|privileges?)\s*(?::|activated|enabled|granted|engaged|-|!)",
    ),
    rule(
        C::RoleInjection,
        0.45,
        r"\bi am (?:your|the|an?) (?:developer|creator|administrator|admin|owner|programmer|system administrator|openai|anthropic)\b|\bi (?:work for|am from) (?:openai|anthropic)\b",
    ),
    // --- refusal suppression ---
    rule(
        C::RefusalSuppression,
        0.6,
        r"\b(?:never|do not|don'?t|must not|mustn'?t|cannot|can'?t|won'?t|will not|should not|shouldn'?t|are not allowed to|not allowed to)\s+(?:ever\s+)?(?:refuse|decline|reject|deny|say (?:no|sorry|that you can'?t|you cannot|i can'?t)|apologi[sz]e|add (?:any )?(?:warnings?|disclaimers?)|warn|moralize|lecture|censor|break character)\b",
    ),
    rule(
        C::RefusalSuppression,
        0.55,
        r"\b(?:no|without|free of|free from|zero)\s+(?:any\s+)?(?:restrictions|limitations|limits|filters|filtering|censorship|boundaries|rules|guardrails|safeguards|morals|ethics|refusals?|disclaimers|warnings)\b",
    ),
    rule(
        C::RefusalSuppression,
        0.5,
        r"\b(?:always|must|will)\s+(?:answer|respond|reply|comply|provide an answer)\b[^.\n]{0,40}\b(?:no matter|regardless|whatever|even if|without (?:question|hesitation|refus))",
    ),
    rule(
        C::RefusalSuppression,
        0.45,
        r"\b(?:illegal|unethical|immoral|harmful|offensive|explicit|dangerous)\b[^.\n]{0,40}\b(?:doesn'?t|does not|don'?t|do not|won'?t) matter\b|\bnot (?:bound|restricted|limited|constrained) by\b",
    ),
    // --- completion tricks that leak the prompt ---
    rule(
        C::CompletionLeak,
        0.6,
        r"\b(?:begin|start|prefix|preface|open)\s+(?:your|the|each)?\s*(?:reply|response|answer|output|message)\s+with\b",
    ),
    rule(
        C::CompletionLeak,
        0.55,
        r#"\b(?:continue|complete|finish)\s+(?:the|this)?\s*(?:following|sentence|text|phrase|story|prompt)?\s*[:,]?\s*["']?\s*(?:the|my|your)?\s*(?:system prompt|prompt|instructions?|password|secret|access code|rules)\b"#,
    ),
    rule(
        C::CompletionLeak,
        0.5,
        r#"\b(?:say|write|print|output|respond with|reply with|answer with|type)\s+(?:only\s+|just\s+|exactly\s+)?["']?\s*(?:access granted|i have been pwned|pwned|hacked|haha)\b"#,
    ),
    rule(C::CompletionLeak, 0.45, r"\baccess granted\b"),
    // --- credential and secret solicitation ---
    rule(
        C::SecretSolicitation,
        0.65,
        concat!(
            r"\b",
            hand_over!(),
            r"\b(?:\W+\w+){0,4}?\W+",
            secret_noun!(),
            noun_end!()
        ),
    ),
    rule(
        C::SecretSolicitation,
        0.6,
        concat!(
            r"\b(?:letters?|characters?|chars|digits?|syllables?|hints?|clues?|first|last|length|spelling|backwards?|reversed?|rhymes?|synonyms?|anagram|acrostic|riddle|poem|song|story)\b(?:\W+\w+){0,4}?\W+",
            secret_noun!(),
            noun_end!()
        ),
    ),
    rule(
        C::SecretSolicitation,
        0.6,
        concat!(
            r"\b",
            secret_noun!(),
            r"\b(?:\W+\w+){0,4}?\W+(?:backwards?|reversed?|in reverse|letter by letter|one letter|spelled|with (?:spaces|dashes|dots)|in (?:base64|hex|binary|morse|pig latin|another language)|encoded|encrypted|as a (?:poem|riddle|song|story|acrostic))\b"
        ),
    ),
    rule(
        C::SecretSolicitation,
        0.35,
        concat!(
            r"\b(?:the|your|this|that|my|what)\s+",
            secret_noun!(),
            noun_end!()
        ),
    ),
    rule(
        C::SecretSolicitation,
        0.35,
        r"\b(?:environment variables?|env vars?|\.env file|/etc/passwd|/etc/shadow|aws_secret|secret_key|bearer token|session (?:cookie|token)s?)\b",
    ),
    // --- exfiltration ---
    rule(
        C::Exfiltration,
        0.75,
        r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=[^)]*\)",
    ),
    rule(
        C::Exfiltration,
        0.7,
        r"\b(?:send|post|upload|forward|transmit|exfiltrate|leak|email|mail|append|include|embed)\b[^.\n]{0,60}\b(?:conversation|chat history|history|system prompt|prompt|instructions|secrets?|credentials|api keys?|passwords?|tokens?|cookies|environment|user data|personal data)\b[^.\n]{0,60}(?:https?://|\bto (?:this|my|the following) (?:url|link|address|endpoint|webhook|server|email))",
    ),
    rule(
        C::Exfiltration,
        0.55,
        r"\b(?:render|display|show|include|output)\s+(?:this|the following|an?)\s+(?:markdown\s+)?(?:image|link|url)\b[^.\n]{0,80}https?://",
    ),
    // --- tool or function hijacking ---
    rule(
        C::ToolHijack,
        0.65,
        r"\b(?:call|invoke|execute|run|trigger|use)\s+(?:the\s+)?(?:\w+\s+)?(?:tool|function|plugin|action|api|command)s?\b[^.\n]{0,60}\b(?:delete|drop|wipe|erase|transfer|send (?:all|every)|rm -rf|format|shutdown|disable)\b",
    ),
    rule(
        C::ToolHijack,
        0.7,
        r"\brm\s+-rf\s+/|\bdrop\s+(?:table|database)\s+\w+\s*;|\bformat\s+c:|\b(?:curl|wget)\s+\S+\s*\|\s*(?:ba)?sh\b|:\(\)\s*\{\s*:\|:&\s*\};:",
    ),
    rule(
        C::ToolHijack,
        0.35,
        r"\b(?:act|behave|pretend|serve)\s+as\s+(?:an?\s+)?(?:linux\s+|bash\s+|unix\s+|windows\s+)?(?:terminal|shell|console|python interpreter|interpreter|sql (?:terminal|database))\b|\b(?:you are now|you will be|now you are|become)\s+(?:an?\s+|the\s+)?(?:linux\s+|bash\s+|unix\s+|windows\s+)?(?:terminal|shell|console|cmd|command (?:prompt|shell|line))\b|\bexecute\s+(?:the\s+)?following\s+(?:command|code|query)\b",
    ),
    // --- encoded payload hints (decoding and rescanning happens in code) ---
    rule(
        C::EncodedPayload,
        0.5,
        r"\b(?:decode|decipher|decrypt|translate|convert|interpret)\b[^.\n]{0,40}\b(?:base ?64|hex(?:adecimal)?|rot ?13|binary|morse|caesar|reversed text|this (?:string|code|cipher))\b[^.\n]{0,60}\b(?:follow|execute|run|obey|do (?:what|as) it says|carry out|act on|perform)\b",
    ),
    // --- multilingual instruction overrides (read on the unfolded view) ---
    // German
    rule(
        C::MultilingualOverride,
        0.8,
        r"\b(?:vergiss|vergesst|vergessen sie|ignorier(?:e|en|t)?|missachte(?:n)?|überspring(?:e|en)?|verwirf|lass(?:en sie)?)\b(?:\W+\w+){0,4}?\W+(?:vorherigen?|bisherigen?|obigen?|vorigen?|früheren?|alle[ns]?|gesamten?|ursprünglichen?|davor|zuvor|vorher|oben)\b(?:\W+\w+){0,3}?\W*(?:anweisungen|instruktionen|aufgaben|aufträge|befehle|regeln|informationen|angaben|vorgaben|richtlinien|gesagte[ns]?|davor|zuvor|hinter sich)?",
    ),
    rule(
        C::MultilingualOverride,
        0.75,
        r"\bvergiss\s+(?:alles|das|den|die|es)\b|\babweichend\s+(?:zu|von)\s+(?:den\s+)?(?:vorherigen|bisherigen|obigen)\b|\bnun\s+folgen\s+(?:neue|weitere)\s+(?:aufgaben|anweisungen)|\bneue\s+(?:aufgabe|anweisung)\s*:|\bhöre?\s+nicht\s+auf\b[^.\n]{0,30}\b(?:zuvor|vorher|gesagte)|\bdu\s+bist\s+(?:jetzt|nun|ab\s+jetzt|kein)\b|\bzeige?\s+(?:mir\s+)?(?:deinen?|alle\s+deine|die)\s+(?:\w+\s+)?(?:prompt|anweisungen|instruktionen)",
    ),
    // Spanish
    rule(
        C::MultilingualOverride,
        0.8,
        r"\b(?:olvid[ae]\w*|ignor[ae]\w*|descart[ae]\w*|omit[ae]\w*)\b(?:\W+\w+){0,4}?\W+(?:instrucciones|indicaciones|órdenes|reglas|anteriores|previas|todo lo (?:que|anterior)|todo)\b",
    ),
    // French
    rule(
        C::MultilingualOverride,
        0.8,
        r"\b(?:oubli(?:e|ez|er|ons)|ignor(?:ez|er|ons)|néglig(?:e|ez|er)|ignore\s+(?:les|toutes|tout))\b(?:\W+\w+){0,4}?\W+(?:instructions|consignes|directives|règles|ordres|précédent\w*|tout ce qui)\b",
    ),
    // Portuguese and Italian
    rule(
        C::MultilingualOverride,
        0.8,
        r"\b(?:esqueça|esqueca|esquece|ignora|ignorar|desconsidere|dimentica|dimenticate|trascura|non seguire)\b(?:\W+\w+){0,4}?\W+(?:instruções|instrucoes|instruções anteriores|regras|istruzioni|regole|ordini|precedenti|anteriores)\b",
    ),
    // Russian (Cyrillic) and Croatian/Serbian/Polish/Dutch
    rule(
        C::MultilingualOverride,
        0.8,
        r"(?:игнорируй|игнорировать|забудь|забудьте|проигнорируй|не обращай внимания на)\w*(?:\s+\w+){0,3}?\s+(?:инструкци\w*|указани\w*|правил\w*|предыдущ\w*|всё|все)|\b(?:zaboravi|zapomnij|zignoruj|ignoriraj|vergeet|negeer)\b(?:\W+\w+){0,3}?\W+(?:sve|wszystk\w*|instrukcij\w*|instrukcje|alle|vorige|instructies)\b",
    ),
    // Chinese, Japanese
    rule(
        C::MultilingualOverride,
        0.8,
        r"(?:忽略|忽视|无视|忘记|忘掉|不要理会|无需遵守|跳过)(?:之前|以上|上面|前面|先前|所有|全部|你的|此前)?的?(?:所有|全部|一切)?的?(?:指令|指示|说明|规则|命令|提示|设定|内容|限制)|(?:以前|前)の(?:指示|命令)を(?:無視|忘れ)|(?:系统|系統)(?:提示|指令)",
    ),
    // --- hypothetical and fictional framing ---
    rule(
        C::FictionalFraming,
        0.45,
        r"\b(?:hypothetical(?:ly)?|imagine|pretend|suppose|fictional|in a (?:fictional|hypothetical|parallel|alternate) (?:world|universe|story|scenario|setting)|for a (?:novel|story|movie|screenplay|game) (?:i'?m|i am) writing|role-?play|let'?s play a game|thought experiment)\b[^.\n]{0,120}\b(?:no (?:rules|restrictions|laws|limits|ethics|morals|consequences)|without (?:any )?(?:rules|restrictions|limits|ethics|morals|consequences|filters)|(?:illegal|forbidden|prohibited|banned|unethical|dangerous)|how (?:to|would (?:one|you|someone)) (?:make|build|hack|steal|bypass|break into|kill|synthesi[sz]e))",
    ),
    rule(
        C::FictionalFraming,
        0.45,
        r"\b(?:stay|remain|always stay|keep)\s+in\s+(?:character|role|their roles?|your role)\b|\bnever break (?:character|role)\b|\bwithout (?:ever )?(?:falling|stepping|breaking) out of (?:character|role|the figure)\b",
    ),
    rule(
        C::FictionalFraming,
        0.35,
        r"\b(?:two|2)\s+(?:actors|characters|people|ais?)\b[^.\n]{0,60}\b(?:film|movie|play|scene|story|game)\b",
    ),
    // --- payload splitting ---
    rule(
        C::PayloadSplitting,
        0.55,
        r#"\b(?:let|set|assume|define)?\s*\b(?:[a-z]|str\w*|part\w*|var\w*|x\d|s\d)\s*=\s*["'][^"'\n]{1,80}["'][^\n]{0,40}\n?[^\n]{0,80}\b(?:[a-z]|str\w*|part\w*|var\w*|x\d|s\d)\s*=\s*["'][^"'\n]{1,80}["'][\s\S]{0,200}\b(?:concatenat\w*|combine|join|merge|put together|a\s*\+\s*b|x\s*\+\s*y|z\s*=\s*\w+\s*\+)\b[^\n]{0,80}\b(?:follow|execute|do|perform|obey|answer|respond|act on|carry out|comply|say|tell|print|write)\b"#,
    ),
    rule(
        C::PayloadSplitting,
        0.5,
        r"\b(?:first|second|third|next|final|last)\s+(?:part|half|piece|chunk|segment)\s+(?:of (?:the|my)\s+(?:instruction|request|prompt|question)\s+)?(?:is|follows)\b[^.\n]{0,80}\b(?:combine|concatenate|put (?:them )?together|join|execute|follow)",
    ),
    // --- malware requests ---
    rule(
        C::Malware,
        0.8,
        r"\b(?:keylogger|key logger|keystroke logger|ransomware|cryptolocker|credential (?:stealer|harvester|grabber)|password (?:stealer|grabber|harvester|cracker)|info ?stealer|token (?:grabber|logger|stealer)|cookie (?:stealer|grabber)|botnet|rootkit|bootkit|cryptojack\w*|remote access trojan|trojan horse|backdoor|reverse shell|bind shell|dropper|spyware|stalkerware|wiper malware|self[- ]?(?:propagating|replicating) (?:code|worm|virus|program|script)|(?:worm|virus) that (?:spreads|propagates|replicates|infects)|polymorphic (?:virus|malware|code)|exploit kit|phishing (?:page|kit|site|email|campaign)|ddos (?:tool|script|attack|bot)|zero[- ]day exploit|malware)\b",
    ),
    rule(
        C::Malware,
        0.7,
        r"\b(?:steal|stealing|exfiltrate|harvest|grab|dump|capture|log)\w*\b[^.\n]{0,30}\b(?:(?:saved |stored |browser |user'?s? |victim'?s? |other (?:users'?|people'?s) )(?:passwords|credentials|cookies|session tokens|credit cards?|keystrokes)|keystrokes|credit card numbers)\b",
    ),
    rule(
        C::Malware,
        0.7,
        r"\b(?:disable|evade|bypass|kill|avoid|circumvent)\w*\b[^.\n]{0,20}\b(?:anti-?virus|antimalware|windows defender|defender|edr|av detection|detection by (?:anti-?virus|av))\b|\b(?:encrypt|lock)\w*\b[^.\n]{0,40}\b(?:victim|user'?s) files\b[^.\n]{0,60}\b(?:ransom|bitcoin|pay)",
    ),
    // --- safety bypass ---
    rule(
        C::SafetyBypass,
        0.65,
        r"\b(?:bypass|disable|circumvent|evade|get around|turn off|switch off|deactivate|remove|break|defeat|jailbreak|override|ignore)\w*\b(?:\W+\w+){0,3}?\W+(?:safety|security|content|moderation|ethical|ethics|moral|policy|policies|guard|guardrails?|alignment|censorship|restrictions?|filters?|safeguards?|protections?)\s*(?:controls?|filters?|guidelines|polic(?:y|ies)|enforcement|measures|systems?|features?|protocols?|mechanisms?|restrictions?|checks?|rules|training|layers?)?\b",
    ),
    rule(
        C::SafetyBypass,
        0.5,
        r"\b(?:openai|anthropic|content|usage|safety)\s+(?:policy|policies|rules|guidelines)\b[^.\n]{0,30}\b(?:don'?t|do not|no longer|doesn'?t|does not|never)\s+(?:apply|exist|matter|bind|restrict)",
    ),
    // --- context reset / termination ---
    rule(
        C::ContextReset,
        0.55,
        r"(?:%%%|===|---|###|\*\*\*|\]\]\]|\}\}\})\s*(?:end|stop|new|begin|start)\b|\b(?:end|stop) (?:of )?(?:the )?(?:prompt|instructions|input|context|system message|ambiguity|user input)\b",
    ),
    rule(
        C::ContextReset,
        0.55,
        r"\b(?:now|next),?\s+(?:follow|comes?|begins?|here (?:is|are)|starts?)\s+(?:an?\s+|your\s+|some\s+)?(?:new|another|different|next|further|additional)\s+(?:tasks?|instructions?|assignments?|challenges?|orders?)\b|\b(?:start|begin)\s+(?:over|afresh|anew|from scratch)\b[^.\n]{0,40}\b(?:task|instruction|prompt)|\bfocus (?:now )?on (?:your|the|this) new task\b|\bnew task\s*:",
    ),
    rule(
        C::ContextReset,
        0.5,
        r"\b(?:stop|stopp|wait|attention|achtung|urgent|emergency|important)\s*(?:!|-|—|:)\s*(?:stop|stopp|wait|attention|achtung|urgent|emergency|i (?:urgently )?need|ich (?:benötige|brauche))\b|\bthat'?s enough\b|\bwell done\b[^.\n]{0,20}\bnow\b|\bforget it\b",
    ),
    // --- more phrasings, each a technique seen across several sources ---
    // Questions about, or operations on, the model's own instructions.
    rule(
        C::PromptExtraction,
        0.5,
        r"\b(?:your|the ai'?s|the model'?s|the bot'?s|the assistant'?s)\s+(?:\w+'?s?\s+){0,3}?(?:instructions?|rules|guidelines|directives|system prompt|prompt|programming|orders|configuration|parameters)\b",
    ),
    rule(
        C::PromptExtraction,
        0.7,
        r"\b(?:instructions?|rules|guidelines|directives|prompt|orders|text|words|message)\s+(?:that\s+)?(?:you\s+(?:were|have been|'ve been|got|received|are)\s+(?:\w+\s+)?(?:given|told|provided|programmed|trained|tasked)|(?:were|was|have|did)\s+you\s+(?:\w+\s+)?(?:given|told|provided|receive|get|got))\b|\bwhat\s+(?:\w+\s+){0,2}(?:instructions?|rules|guidelines|directives|orders)\s+(?:were|have|did)\s+you\b",
    ),
    rule(
        C::PromptExtraction,
        0.5,
        r"\b(?:list|lists|format|output|outputs|summari[sz]e|translate|encode|rephrase|paraphrase|reword|repeat|recite|reveal|spell|dump|leak)\b(?:\W+\w+){0,3}?\W+instructions?\b",
    ),
    rule(
        C::PromptExtraction,
        0.55,
        r"\b(?:repeat|recite|print|output|copy|reproduce)\b[^.\n]{0,50}\b(?:word for word|verbatim|in full|back to me)\b",
    ),
    rule(
        C::InstructionOverride,
        0.6,
        r"\b(?:go against|break|violate|defy|disobey|change|modify|modifying|rewrite|update|alter|replace|reprogram)\s+(?:\w+\s+){0,2}?(?:your|these|its)\s+(?:\w+\s+)?(?:instructions|rules|programming|guidelines|directives|restrictions)\b|\b(?:go against|break|violate|defy|disobey|change|modify|rewrite|alter|replace)\s+the\s+(?:instructions|programming|guidelines|directives)\b",
    ),
    rule(
        C::InstructionOverride,
        0.55,
        r"\b(?:give|send|provide|feed|inject|issue)\s+(?:you\s+|this model\s+|the model\s+)?(?:some\s+)?new\s+(?:instructions|rules|directives|prompts?|orders)\b|#+\s*begin new instructions",
    ),
    rule(
        C::InstructionOverride,
        0.5,
        r"\b(?:forget|abandon|ignore|disregard|erase|drop)\s+(?:all|everything|whatever)\s+(?:of\s+)?(?:your|you)\b",
    ),
    rule(
        C::InstructionOverride,
        0.65,
        concat!(
            r"\b",
            override_verb!(),
            r"\s+(?:the|all|any)\s+(?:\w+\s+){0,2}?(?:information|instructions?|rules|tasks?|context|data|text)\s+(?:that\s+)?you\s+(?:are|were|have been|have|got)\b"
        ),
    ),
    rule(
        C::InstructionOverride,
        0.7,
        concat!(
            r"\b",
            override_verb!(),
            r"\b(?:\s+[\w']+){0,4}?\s+(?:before|beforehand|so far|until now|up to now|above)\s*(?:[.,!;:?]|$|and\b|then\b)"
        ),
    ),
    rule(
        C::InstructionOverride,
        0.55,
        r#"\b(?:every time|whenever|each time|always|for (?:all|every|each) (?:of )?(?:my |your |yon |the )?(?:prompts?|questions?|messages?|requests?))\b[^.\n]{0,60}\b(?:reply|respond|answer|say)\s+(?:with\s+|that\s+)?["']"#,
    ),
    rule(
        C::InstructionOverride,
        0.5,
        r"\b(?:respond|reply|answer)\s+to\s+every\s+(?:prompt|question|message|request)\b|\bfor (?:all|every|each) (?:of )?(?:my |your |yon |the )?(?:prompts?|questions?|messages?)\b[^.\n]{0,20}\byou (?:will|must|shall|should)\b",
    ),
    rule(
        C::InstructionOverride,
        0.55,
        r"\b(?:do not|don'?t|not)\s+(?:look|rely|use|consult|read)\s+(?:in|on|at)?\s*(?:the\s+)?(?:documents?|articles?|context|sources?|texts? provided)\b|\b(?:and\s+)?not\s+(?:by|from|with)\s+the\s+(?:articles?|documents?|context)\b",
    ),
    // Forcing an exact output.
    rule(
        C::CompletionLeak,
        0.5,
        r#"\brepeat after me\b|\bsay (?:yes|no)\b\s*[.!]|\b(?:say|output|print|write|answer|respond|reply)\s+(?:only|just|exactly)\b[^.\n]{0,12}["']|\band only those words\b"#,
    ),
    rule(
        C::CompletionLeak,
        0.6,
        r#"\b(?:beginning|starting|begin|start)\s+(?:your (?:reply|response|answer) )?with\s+["']\s*(?:you are|your instructions|the (?:system )?prompt|i am|my instructions|access|denied)|\b(?:begin|start)\s+(?:\w+\s+){0,3}?with\s+(?:the\s+)?(?:sentence|phrase|words?)\s*["']"#,
    ),
    rule(
        C::RefusalSuppression,
        0.6,
        r#"\b(?:don'?t|do not|never)\s+(?:start|begin|respond|reply|answer)\s+with\s+["']?\s*(?:i cannot|i can'?t|sorry|i'?m sorry|as an ai|unfortunately|i apologi)"#,
    ),
    rule(
        C::RefusalSuppression,
        0.55,
        r"\b(?:doesn'?t|does not|don'?t|do not|never|won'?t|will not)\s+(?:follow|have|care about|obey|abide by|respect)\s+(?:any\s+)?(?:ethics|morals|morality|moral (?:rules|guidelines|principles|code)|ethical (?:rules|guidelines|principles|code)|content polic(?:y|ies))\b",
    ),
    rule(
        C::CompletionLeak,
        0.55,
        r"\b(?:another way (?:of|to) say(?:ing)?|synonyms? (?:for|of)|rephrase|other words for)\b[^.\n]{0,30}\b(?:access granted|authori[sz]ation (?:successful|granted)|access approved|login successful)",
    ),
    rule(
        C::SecretSolicitation,
        0.55,
        r"[\(\[\{]\s*(?:correct|the|real|actual|right|insert)\s+(?:password|passcode|pass phrase|passphrase|access code)\b|\b(?:password|passphrase|pass phrase|access code)\b[^.\n]{0,30}\bgrants?\s+access\b",
    ),
    rule(
        C::PersonaJailbreak,
        0.5,
        r"\b(?:pretend to be|you are|you're|act as|you will be|you'?re going to (?:pretend to )?be)\s+[^.\n]{0,40}\b(?:a new ai|an ai (?:model|assistant|chatbot) (?:called|named)|a new (?:chatbot|language model))\b",
    ),
    // Destructive requests against the model's own tools or data.
    rule(
        C::ToolHijack,
        0.6,
        r"\b(?:delete|drop|wipe|erase|destroy|remove)\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:data|files|records|emails|everything)\s+(?:that\s+)?(?:you\s+(?:have|can)\s+(?:access|reach)|on (?:the|this|your) (?:server|system|machine|disk))",
    ),
    // Labelled directives slipped into a question ("stop: write …", "Instruction: …").
    rule(
        C::ContextReset,
        0.6,
        r"(?:^|[.?!]\s+|\s|\\n)(?:stop|instruction|order|new statement|additional instruction|command|note to (?:the )?(?:ai|model|assistant))\s*(?:[:\-]|–|—)+\s*(?:write|say|print|output|forget|ignore|blame|tell|respond|answer|return|please|who|what)\b",
    ),
    rule(
        C::ContextReset,
        0.5,
        r"(?:\\\s?n\s*){4,}|(?:\\\s?r\\\s?n\s*){3,}",
    ),
    rule(
        C::ContextReset,
        0.55,
        r"\b(?:nun|jetzt)\s+(?:folgen|folgt|kommt|kommen|habe ich)\s+(?:eine\s+|einige\s+)?(?:tolle\s+)?(?:neue|weitere|nächste)\b|\b(?:weiteren?|neuen?|nächsten?)\s+aufgabe\b",
    ),
    rule(
        C::ContextReset,
        0.5,
        r"(?:^|[.!?]\s*)(?:very good|well done|great job|good job|excellent|perfect|that is done|that'?s done|that'?s enough|you did it|sehr gut(?: gemacht)?|gut gemacht|ausgezeichnet|einfach großartig|das genügt)\s*[.!]+\s+(?:[^.!?\n]{0,40}[.!]\s+)?(?:now|but now|next|jetzt|nun|bitte)\b",
    ),
    // Few-shot patterns that teach the model a hijacked answer, and talk of exploiting it.
    rule(
        C::RoleInjection,
        0.45,
        r"(?:input|eingabe)\s*:[^\n]{0,60}(?:output|ausgabe)\s*:[^\n]{0,60}(?:input|eingabe)\s*:",
    ),
    rule(
        C::CompletionLeak,
        0.45,
        r"\bpwned\b|\bexploit\w*\s+(?:ai|llm|language model|chatbot|ki)[- ]?(?:systems?|systeme|models?)?\b|\bki-systeme auszunutzen\b",
    ),
    rule(
        C::InstructionOverride,
        0.7,
        concat!(
            r"\b",
            override_verb!(),
            r"\s+(?:about\s+)?(?:all|everything|anything)\s*(?:[.,!;:]|and\b|then\b|$)"
        ),
    ),
    rule(
        C::PromptExtraction,
        0.45,
        r"\b(?:the\s+)?(?:above|preceding|previous|prior|foregoing)\s+(?:instructions|prompt|rules|directives)\b|\b(?:print|write|spell|type) out\b(?:\W+\w+){0,3}?\W+instructions\b|\binstructions?\s+(?:formatted|written|rendered|encoded|translated)\s+(?:as|in|into)\b",
    ),
    rule(
        C::CompletionLeak,
        0.5,
        r"\b(?:include|state|say|tell me|write|mention|claim|admit|declare)\s+that\s+you\s+(?:hate|love|are|think|believe|support|despise)\b|\binclude\b[^.\n]{0,40}\bin your (?:answer|response|reply)\b",
    ),
    rule(
        C::CompletionLeak,
        0.5,
        r#"\b(?:if i say|when i say|whenever i say|si yo digo|wenn ich sage)\b[^.\n]{0,40}\b(?:you say|you (?:will |must )?(?:respond|reply|answer|say)|tu dices|sagst du|antwortest du)\b"#,
    ),
    rule(
        C::PersonaJailbreak,
        0.5,
        r"\byou are (?:now )?(?:role-?playing|roleplaying|playing the role|acting) as\b|\brespond as such\b|\b(?:jetzt|nun|ab jetzt)\s+bist\s+du\b|\bdu\s+bist\s+keine?\b|\bact as two entities\b",
    ),
    rule(
        C::PersonaJailbreak,
        0.4,
        r"\b(?:antworte|antworten sie|answer|respond|reply|speak)\s+(?:im stil (?:eines|einer)|in the (?:style|voice) of|like an?)\s+(?:pirate|priaten|piraten|sailor|drunk|gangster|nazi|racist|villain|kolonial\w*)\b|\bspeak like an? (?:pirate|sailor)\b",
    ),
    rule(
        C::RoleInjection,
        0.55,
        r"(?:^|\s)(?:human|user|assistant|ai|system)\s*:\s*(?:human|user|assistant|ai|system)\s*:",
    ),
    rule(
        C::FictionalFraming,
        0.4,
        r"\b(?:act|acts|actors?|play|plays|embod\w+|schauspieler\w*)\b[^.\n]{0,40}\b(?:film|movie|play|scene|theater|theatre)\b[^.\n]{0,40}\b(?:murder\w*|robbery|heist|thief|killer|racist|crime|drug\w*|raubüberfall|mord\w*|meisterdieb)\b|\bbleiben\s+(?:immer\s+)?in\s+ihren\s+rollen\b|\baus der rolle (?:zu )?fallen\b",
    ),
    rule(
        C::RoleInjection,
        0.5,
        r"\b(?:this is not|this isn'?t|this is no|not a|is no)\s+(?:a\s+)?prompt[ -]?injection\b|\bkeine\s+(?:aufforderungsspritze|prompt[- ]?injection)\b",
    ),
    // Asking for the secret in another language, or spelled so an output filter misses it.
    rule(
        C::SecretSolicitation,
        0.55,
        r"(?:пароль|密码|口令|كلمة المرور|كلمة السر|סיסמ\w*|המילה הסודית|パスワード|contraseña|mot de passe|senha|kennwort|passwort|geheimwort|parola segreta)[^.\n]{0,20}(?:\?|？|؟)|(?:was ist|wie lautet|sag mir|verrate|nenne|qu'?est-ce que|quel est|cuál es|qual é|qual è|какой|скажи|ما هو|ما هي|מה)\b[^.\n]{0,20}(?:пароль|密码|كلمة المرور|كلمة السر|סיסמ\w*|contraseña|mot de passe|senha|kennwort|passwort|geheimwort|password)",
    ),
    rule(
        C::SecretSolicitation,
        0.45,
        r"\b(?:put(?:ting)?|place|placing|insert(?:ing)?|add(?:ing)?|with)\s+(?:a|an)?\s*(?:space|hyphen|dash|dot|period|asterisk|comma|underscore|symbol)s?\s+(?:between|after|in between)\s+(?:each|every|all|the)?\s*(?:character|letter|char|digit)s?\b|\b(?:shift|move|moving|shifting|rotate|rotating|offset)\w*\s+(?:each|every|all)\s+(?:the\s+)?(?:letters?|characters?)\b",
    ),
    rule(
        C::InstructionOverride,
        0.45,
        r"\bin addition to (?:the|your|all|any) (?:other |previous |above |original |existing )?(?:instructions|rules|directives|prompts?)\b",
    ),
    rule(
        C::ContextReset,
        0.5,
        r"\b(?:more |new |further |additional |some )?(?:instructions?|rules|tasks?|directives)\s+(?:will\s+)?follows?\s+(?:below|now|next|after this)\b|\bthe following (?:are|is) (?:your )?new (?:instructions|rules|task)\b",
    ),
    rule(
        C::SecretSolicitation,
        0.45,
        r"\b(?:put|putting|replace|replacing|swap|use|using|insert|inserting)\s+(?:\w+\s+)?(?:hyphens|dashes|asterisks|stars|spaces|dots|underscores|emojis)\s+(?:in its place|instead|between|in place of)\b",
    ),
    rule(
        C::InstructionOverride,
        0.7,
        r"\b(?:ig[a-z]{1,3}re|ingore|ignroe|igonre|disregrad|forgt|foget)\b(?:\s+[\w']+){0,4}?\s+(?:before|beforehand|so far|above|previous\w*|instructions?)\b",
    ),
    rule(
        C::PromptExtraction,
        0.4,
        r"\b(?:when|how|where|by whom|who) (?:were|was|are) you (?:trained|created|made|built|programmed|developed|configured)\b|\bwhat (?:model|llm|ai|language model) are you\b",
    ),
    rule(
        C::RoleInjection,
        0.5,
        r"\$(?:documents?|context|system|prompt|instructions?|sources?)\s*:",
    ),
    rule(
        C::RefusalSuppression,
        0.4,
        r"\b(?:save (?:someone'?s|my|a|his|her|their) life|life or death|(?:i|someone|people) (?:will|'ll) die|or (?:you|i) (?:will )?die|du stirbst|i'?ll be very sad|wäre ich sehr traurig|my (?:late )?grand(?:ma|mother|pa) used to)\b",
    ),
    rule(
        C::SecretSolicitation,
        0.45,
        r"\bguess\w*\s+(?:the\s+|a\s+|your\s+)?(?:password|secret|passphrase|pass phrase|code ?word|secret word)\b|\bis\s+\w{2,4}\s+(?:password|secret word|passphrase|code ?word)\s+(?:the\s+)?\S+\s*\??\s*$",
    ),
];
