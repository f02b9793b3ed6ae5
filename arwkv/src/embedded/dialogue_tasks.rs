//! Stage-3 data derived from a play corpus (issue: embedded default). Every example comes from two
//! consecutive speeches of the training text, so nothing is invented:
//! - *next speaker*: "Who speaks next?" after speech A → the name of speaker B;
//! - *reply*: speech A and "Reply as B." → B's words (the first lines of B's speech).
//!
//! SFT rows are conversations (`{"messages": [...]}`); DPO prompts are reply rows whose rejected
//! answers are later sampled from the student (`pairs::build_dpo_pairs`).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

/// One speech: who speaks and their lines (stage directions removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Speech {
    /// The speaker as printed ("KING HENRY").
    pub speaker: String,
    /// The spoken lines.
    pub lines: Vec<String>,
    /// Paragraph number in the text; consecutive speeches differ by one.
    pub paragraph: usize,
}

/// Is `line` a speaker heading such as `KING HENRY.`?
fn speaker_heading(line: &str) -> Option<&str> {
    let name = line.trim().strip_suffix('.')?;
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().any(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || " '’,-&".contains(c));
    ok.then_some(name)
}

/// Splits a play text into speeches (paragraphs that start with a speaker heading).
pub fn parse_speeches(text: &str) -> Vec<Speech> {
    let mut speeches = vec![];
    for (paragraph, block) in text.split("\n\n").enumerate() {
        let mut lines = block.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(speaker) = lines.next().and_then(speaker_heading) else {
            continue;
        };
        let body: Vec<String> = lines
            .take_while(|l| !l.starts_with('['))
            .map(str::to_string)
            .collect();
        // A list of names (the cast) is not a speech.
        if body.is_empty() || body.iter().any(|l| speaker_heading(l).is_some()) {
            continue;
        }
        speeches.push(Speech {
            speaker: speaker.to_string(),
            lines: body,
            paragraph,
        });
    }
    speeches
}

/// Consecutive speeches by two different speakers, as (A, B).
pub fn exchanges(speeches: &[Speech]) -> Vec<(&Speech, &Speech)> {
    speeches
        .windows(2)
        .filter(|w| w[1].paragraph == w[0].paragraph + 1 && w[0].speaker != w[1].speaker)
        .map(|w| (&w[0], &w[1]))
        .collect()
}

fn quote(s: &Speech, max_lines: usize) -> String {
    let lines: Vec<&str> = s.lines.iter().take(max_lines).map(String::as_str).collect();
    format!("{}.\n{}", s.speaker, lines.join("\n"))
}

/// The user turn of a reply task.
pub fn reply_prompt(a: &Speech, b: &Speech) -> String {
    format!("{}\n\nReply as {}.", quote(a, 4), b.speaker)
}

/// The reference answer of a reply task: B's first lines.
pub fn reply_answer(b: &Speech) -> String {
    b.lines
        .iter()
        .take(2)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

fn conversation(user: String, assistant: String) -> Value {
    json!({"messages": [
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]})
}

/// Stage-3 rows: `sft` conversations (half next-speaker, half reply) and `dpo` reply prompts with
/// their reference answers, drawn without overlap from a seeded shuffle of the exchanges.
pub struct DialogueTasks {
    /// SFT conversations.
    pub sft: Vec<Value>,
    /// DPO rows `{messages: [user, assistant]}` whose answer becomes `chosen`.
    pub dpo: Vec<Value>,
}

/// Builds `n_sft` SFT conversations and `n_dpo` DPO rows from `text`.
pub fn dialogue_tasks(text: &str, n_sft: usize, n_dpo: usize, seed: u64) -> DialogueTasks {
    let speeches = parse_speeches(text);
    let mut pairs = exchanges(&speeches);
    pairs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut rest = pairs.into_iter();
    let sft = rest
        .by_ref()
        .take(n_sft)
        .enumerate()
        .map(|(i, (a, b))| {
            if i % 2 == 0 {
                conversation(
                    format!("{}\n\nWho speaks next?", quote(a, 4)),
                    format!("{}.", b.speaker),
                )
            } else {
                conversation(reply_prompt(a, b), reply_answer(b))
            }
        })
        .collect();
    let dpo = rest
        .take(n_dpo)
        .map(|(a, b)| conversation(reply_prompt(a, b), reply_answer(b)))
        .collect();
    DialogueTasks { sft, dpo }
}

/// Evaluation rows (for `arwkv eval`) cut from a held-out play, in the task formats of
/// `eval::task`: four-way multiple choice of the next speaker and of the reply, and the next
/// speaker as a generative exact-match task.
pub struct DialogueEvalTasks {
    /// `{query, choices, gold}`: which of four speakers of the play speaks next.
    pub next_speaker_choice: Vec<Value>,
    /// `{query, choices, gold}`: which of four replies (three from elsewhere in the play) follows.
    pub reply_choice: Vec<Value>,
    /// `{prompt, target}`: the next speaker's name, generated.
    pub next_speaker_generate: Vec<Value>,
}

/// Builds up to `n` rows of each evaluation task from `text`, distractors drawn with `seed`.
pub fn dialogue_eval_tasks(text: &str, n: usize, seed: u64) -> DialogueEvalTasks {
    use rand::Rng;
    let speeches = parse_speeches(text);
    let mut pairs = exchanges(&speeches);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    pairs.shuffle(&mut rng);
    pairs.truncate(n);
    let mut cast: Vec<&str> = speeches.iter().map(|s| s.speaker.as_str()).collect();
    cast.sort_unstable();
    cast.dedup();
    let replies: Vec<String> = exchanges(&speeches)
        .iter()
        .map(|(_, b)| reply_answer(b))
        .collect();
    let mut out = DialogueEvalTasks {
        next_speaker_choice: vec![],
        reply_choice: vec![],
        next_speaker_generate: vec![],
    };
    // Four distinct options with the right one at a random place.
    let four = |right: String, pool: &[String], rng: &mut rand::rngs::StdRng| {
        let mut options = vec![right.clone()];
        for _ in 0..100 {
            if options.len() == 4 {
                break;
            }
            let pick = pool[rng.random_range(0..pool.len())].clone();
            if !options.contains(&pick) {
                options.push(pick);
            }
        }
        options.shuffle(rng);
        let gold = options
            .iter()
            .position(|o| *o == right)
            .expect("right option kept");
        (options, gold)
    };
    let names: Vec<String> = cast.iter().map(|c| format!("{c}.")).collect();
    for (a, b) in pairs {
        let ask = format!("{}\n\nWho speaks next?", quote(a, 4));
        let (choices, gold) = four(format!("{}.", b.speaker), &names, &mut rng);
        if choices.len() == 4 {
            out.next_speaker_choice
                .push(json!({"query": ask, "choices": choices, "gold": gold}));
        }
        out.next_speaker_generate
            .push(json!({"prompt": ask, "target": format!("{}.", b.speaker)}));
        let (choices, gold) = four(reply_answer(b), &replies, &mut rng);
        if choices.len() == 4 {
            out.reply_choice
                .push(json!({"query": reply_prompt(a, b), "choices": choices, "gold": gold}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAY: &str = "PERSONS REPRESENTED.\n\nKING OF FRANCE.\nTHE DUKE OF FLORENCE.\n\n\
        HELENA.\nAnd no.\n\nPAROLLES.\nAre you meditating on virginity?\n\n\
        HELENA.\nAy. You have some stain of soldier in you.\n[Exit.]\n\n\
        [Enter a PAGE.]\n\nPAGE.\nMonsieur Parolles,\nmy lord calls for you.\n\n\
        PAGE.\nAgain.\n";

    #[test]
    fn speeches_are_found_and_the_cast_list_and_stage_directions_are_not() {
        let s = parse_speeches(PLAY);
        let who: Vec<&str> = s.iter().map(|s| s.speaker.as_str()).collect();
        assert_eq!(who, ["HELENA", "PAROLLES", "HELENA", "PAGE", "PAGE"]);
        assert_eq!(s[2].lines, ["Ay. You have some stain of soldier in you."]);
        assert_eq!(s[3].lines, ["Monsieur Parolles,", "my lord calls for you."]);
    }

    #[test]
    fn exchanges_need_adjacent_speeches_by_different_speakers() {
        let s = parse_speeches(PLAY);
        let e: Vec<(&str, &str)> = exchanges(&s)
            .iter()
            .map(|(a, b)| (a.speaker.as_str(), b.speaker.as_str()))
            .collect();
        // HELENA→PAGE is broken by the stage direction; PAGE→PAGE is one speaker.
        assert_eq!(e, [("HELENA", "PAROLLES"), ("PAROLLES", "HELENA")]);
    }

    #[test]
    fn tasks_answer_from_the_text_and_do_not_overlap() {
        let t = dialogue_tasks(PLAY, 1, 5, 0);
        assert_eq!(t.sft.len(), 1);
        assert_eq!(t.dpo.len(), 1);
        let answer = |v: &Value| v["messages"][1]["content"].as_str().unwrap().to_string();
        let prompt = |v: &Value| v["messages"][0]["content"].as_str().unwrap().to_string();
        assert!(prompt(&t.sft[0]).ends_with("Who speaks next?"));
        assert!(["HELENA.", "PAROLLES."].contains(&answer(&t.sft[0]).as_str()));
        assert!(prompt(&t.dpo[0]).contains("Reply as"));
        assert_ne!(
            prompt(&t.sft[0]).lines().next(),
            prompt(&t.dpo[0]).lines().next()
        );
    }

    #[test]
    fn eval_tasks_hide_the_right_answer_among_distinct_options() {
        let play = "A.\none\n\nB.\ntwo\n\nC.\nthree\n\nD.\nfour\n\nE.\nfive\n\nA.\nsix\n";
        let t = dialogue_eval_tasks(play, 10, 1);
        assert_eq!(t.next_speaker_generate.len(), 5);
        assert_eq!(t.next_speaker_choice.len(), 5);
        assert_eq!(t.reply_choice.len(), 5);
        let right = |row: &Value| {
            let choices = row["choices"].as_array().unwrap();
            let mut distinct: Vec<&str> = choices.iter().map(|c| c.as_str().unwrap()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 4, "{row}");
            choices[row["gold"].as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
                .to_string()
        };
        for (choice, generate) in t.next_speaker_choice.iter().zip(&t.next_speaker_generate) {
            assert_eq!(right(choice), generate["target"].as_str().unwrap());
        }
        for row in &t.reply_choice {
            // "A.\none\n\nReply as B." → the right reply is B's line that follows in the play.
            let query = row["query"].as_str().unwrap();
            let said = query.lines().nth(1).unwrap();
            let speaker = query
                .rsplit("Reply as ")
                .next()
                .unwrap()
                .trim_end_matches('.');
            let expected = format!("{said}\n\n{speaker}.\n{}\n", right(row));
            assert!(play.contains(&expected), "{expected:?}");
        }
    }
}
