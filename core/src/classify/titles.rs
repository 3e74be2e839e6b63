//! Which short labeled texts (titles) belong to which cases. A hotline's title list and its cases
//! overlap: a case's own title, or a rewording of it, may be among the titles. Trained on, it
//! would tell the lexical model the answer for that case, so out-of-fold predictions leave a
//! case's titles out of the folds that predict it, and an evaluation leaves a test case's titles
//! out of training (`triage eval --titles`).

use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

/// Share of a title's character pairs (letters and digits only) found in a case's text at or
/// above which the title is taken for that case's. Deliberately broad: on the hotline data it
/// ties 6,127 of the 7,838 titles to some of the 6,696 training cases and 558 to some of the 500
/// dev cases (a stricter 80% of pairs in the first 400 characters ties 1,799 to training cases,
/// 23 to dev cases: many titles are those of training messages). Leaving out a title that was not
/// a case's own costs a training row; keeping one that was would inflate the measurement.
pub const OWNED: f32 = 0.5;

/// Characters of a case's text looked at.
const TEXT_CHARS: usize = 3000;

fn pairs(text: &str, limit: usize) -> HashSet<[char; 2]> {
    let letters: Vec<char> = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(limit)
        .collect();
    letters.windows(2).map(|w| [w[0], w[1]]).collect()
}

/// For each short text, the indices of the `texts` it is taken for the title of (`OWNED`).
pub fn owners(shorts: &[&str], texts: &[&str]) -> Vec<Vec<usize>> {
    let mut index: HashMap<[char; 2], Vec<u32>> = HashMap::new();
    for (i, text) in texts.iter().enumerate() {
        for pair in pairs(text, TEXT_CHARS) {
            index.entry(pair).or_default().push(i as u32);
        }
    }
    shorts
        .par_iter()
        .map(|short| {
            let own = pairs(short, usize::MAX);
            let mut hits: HashMap<u32, u32> = HashMap::new();
            for pair in &own {
                for &i in index.get(pair).into_iter().flatten() {
                    *hits.entry(i).or_default() += 1;
                }
            }
            let mut found: Vec<usize> = hits
                .into_iter()
                .filter(|&(_, n)| n as f32 >= OWNED * own.len() as f32)
                .map(|(i, _)| i as usize)
                .collect();
            found.sort_unstable();
            found
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reworded_title_belongs_to_its_case_and_an_unrelated_one_does_not() {
        let texts = [
            "I市人民检察院对农民工失信，欠薪两年未付，农民工为此汗颜，请领导关注。",
            "小区门口的路灯坏了三个月，晚上出行很不方便。",
        ];
        let shorts = [
            "I市检察院失信，农民工为此汗颜！",
            "路灯坏了",
            "学校食堂卫生差",
            "",
        ];
        assert_eq!(
            owners(&shorts, &texts),
            vec![vec![0], vec![1], vec![], vec![]]
        );
    }
}
