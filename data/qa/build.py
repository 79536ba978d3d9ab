#!/usr/bin/env python3
"""Build data/qa/{train,test}.jsonl from the Austen texts in data/austen/.

Standard library only.  Run from anywhere:  python3 data/qa/build.py

Each context is a run of consecutive paragraphs of a novel, located by a
phrase that occurs in exactly one paragraph (the first of the run).  Within a
paragraph, line breaks and runs of spaces are collapsed to single spaces;
paragraphs are joined with "\n".  Answers are located with str.find, so every
answer_start is right by construction; the script aborts if an answer is
missing.  An answer may be given as (text, anchor): then the text is searched
for after the first occurrence of the anchor, to pick the intended occurrence
when the text appears more than once.  Output is deterministic.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
AUSTEN = os.path.join(HERE, "..", "austen")

NOVELS = {
    "pp": ("Pride and Prejudice", "prideprejudice.txt"),
    "ss": ("Sense and Sensibility", "sensesensibility.txt"),
    "pe": ("Persuasion", "persuasion.txt"),
}

# (novel, split, opening phrase, number of paragraphs, [(question, answer, ...)])
# an answer is "text" or ("text", "anchor")
PASSAGES = [
    # ------------------------------------------------------------ Pride and Prejudice
    ("pp", "train", "It is a truth universally acknowledged", 12, [
        ("What must a single man in possession of a good fortune be in want of?", "a wife"),
        ("According to Mrs. Bennet, who has told her that Netherfield Park is let?", "Mrs. Long"),
        ("Where does the young man who has taken Netherfield come from?", "the north of England"),
        ("How did the new tenant travel down to see the place?", "in a chaise and four"),
        ("With whom did the new tenant come to an agreement?", "Mr. Morris"),
        ("By when is the new tenant to take possession of Netherfield?", "before Michaelmas", "Michaelmas"),
        ("What is the name of the man who has taken Netherfield?", "Bingley"),
    ]),
    ("pp", "train", "Mr. Bingley was good-looking and gentlemanlike", 6, [
        ("Who was Mr. Bingley's brother-in-law?", "Mr. Hurst"),
        ("What income was Mr. Darcy reported to have?", "ten thousand a year"),
        ("In which county was Mr. Darcy's large estate?", "Derbyshire"),
        ("What discovery turned the tide of Mr. Darcy's popularity?", "he was discovered to be proud"),
        ("With whom did Mr. Darcy dance at the assembly?", "once with Mrs. Hurst and once with Miss Bingley"),
        ("Who was amongst the most violent against Mr. Darcy?", "Mrs. Bennet"),
        ("Why had Elizabeth been obliged to sit down for two dances?", "the scarcity of gentlemen"),
        ("For what would Mr. Bingley not be so fastidious as Darcy?", "a kingdom"),
    ]),
    ("pp", "test", '"Which do you mean?" and turning round', 4, [
        ("What word did Mr. Darcy first use to describe Elizabeth?", "tolerable"),
        ("What kind of disposition did Elizabeth have?", "a lively, playful disposition"),
        ("As what had Mary heard herself mentioned to Miss Bingley?", "the most accomplished girl in the neighbourhood"),
        ("What was the name of the village where the Bennets lived?", "Longbourn"),
        ("What made Mr. Bennet regardless of time?", "a book"),
        ("Whom did Mr. Bingley ask to dance first?", "Miss Lucas"),
        ("With whom did Mr. Bingley dance the two third?", "Miss King"),
    ]),
    ("pp", "train", '"Can I have the carriage?" said Jane', 6, [
        ("How does Mrs. Bennet want Jane to travel?", "on horseback"),
        ("Why does Mrs. Bennet advise Jane to go on horseback?", "because it seems likely to rain"),
        ("Whose chaise will the gentlemen have to go to Meryton?", "Mr. Bingley's chaise"),
        ("Why can Mr. Bennet not spare the horses?", "They are wanted in the farm"),
    ]),
    ("pp", "train", "Miss Bennet had slept ill", 3, [
        ("Who examined Jane at Netherfield?", "The apothecary"),
        ("What did the apothecary say Jane had caught?", "a violent cold"),
        ("When did Elizabeth feel that she must go?", "When the clock struck three"),
        ("What did Miss Bingley first offer Elizabeth?", "the carriage"),
        ("Where was a servant dispatched to acquaint the family with Elizabeth's stay?", "to Longbourn", "Longbourn"),
    ]),
    ("pp", "train", '"Hunsford, near Westerham, Kent, 15th October.', 8, [
        ("From where was Mr. Collins's letter written?", "Hunsford, near Westerham, Kent"),
        ("On what date was the letter written?", "15th October"),
        ("Whose patronage has Mr. Collins been fortunate enough to receive?", "the Right Honourable Lady Catherine de Bourgh", "Lady Catherine de Bourgh"),
        ("When did Mr. Collins receive ordination?", "at Easter"),
        ("Of which estate is Mr. Collins next in the entail?", "Longbourn estate", "Longbourn"),
        ("What does Mr. Collins hope the Bennets will not reject?", "the offered olive-branch"),
        ("On what day does Mr. Collins propose to wait on the family?", "Monday, November 18th"),
        ("What chiefly struck Elizabeth about Mr. Collins?", "his extraordinary deference for Lady Catherine"),
    ]),
    ("pp", "train", '"An unhappy alternative is before you, Elizabeth.', 2, [
        ("Whom does Mrs. Bennet want Elizabeth to marry?", "Mr. Collins"),
        ("From this day, to whom must Elizabeth be a stranger?", "one of your parents"),
    ]),
    ("pp", "train", "Sir William and Lady Lucas were speedily applied to", 2, [
        ("How old was Charlotte when she accepted Mr. Collins?", "twenty-seven"),
        ("Where did Sir William think Mr. Collins and his wife should make their appearance?", "St. James's"),
        ("What did Lady Lucas begin directly to calculate?", "how many years longer Mr. Bennet was likely to live"),
        ("What had always been Charlotte's object?", ("marriage", "Without thinking highly either of men or matrimony, ")),
        ("Whose friendship did Charlotte value beyond that of any other person?", "Elizabeth Bennet"),
        ("From what apprehension were the boys relieved?", "their apprehension of Charlotte's dying an old maid"),
    ]),
    ("pp", "train", "Mrs. Gardiner about this time reminded Elizabeth", 1, [
        ("Who reminded Elizabeth of her promise concerning that gentleman?", "Mrs. Gardiner"),
        ("What was the most remarkable charm of the young lady to whom he was now rendering himself agreeable?",
         "The sudden acquisition of ten thousand pounds", "ten thousand pounds"),
        ("How much had Elizabeth's heart been touched?", "but slightly"),
    ]),
    ("pp", "train", '"In vain I have struggled.', 3, [
        ("What does Darcy say will not be repressed?", "My feelings"),
        ("How did Elizabeth first respond to Darcy's declaration?", "She stared, coloured, doubted, and was silent"),
        ("Besides tenderness, on what subject was Darcy eloquent?", "pride"),
        ("What did Darcy's countenance express?", "real security"),
        ("In what did Elizabeth lose all compassion?", "anger"),
    ]),
    ("pp", "train", '"Mr. Wickham is the son of a very respectable man', 2, [
        ("What had Mr. Wickham's father had the management of?", "all the Pemberley estates"),
        ("Where did Darcy's father support Wickham after school?", "Cambridge"),
        ("What profession did Darcy's father hope Wickham would follow?", "the church"),
        ("When did Darcy's father die?", "about five years ago"),
        ("What legacy did Darcy's father leave Wickham?", "one thousand pounds"),
        ("How much did Wickham accept in return for resigning all claim to assistance in the church?", "three thousand pounds"),
        ("What did Wickham say he had some intention of studying?", ("law", "of studying ")),
        ("For how long did Darcy hear little of Wickham?", "about three years"),
    ]),
    ("pp", "train", '"I must now mention a circumstance which I would wish to forget', 1, [
        ("Who shared with Darcy the guardianship of his sister?", "Colonel Fitzwilliam"),
        ("Where did Darcy's sister go last summer?", "Ramsgate"),
        ("Through whose connivance did Wickham recommend himself to Georgiana?", "Mrs. Younge"),
        ("How old was Georgiana when she consented to the elopement?", "fifteen"),
        ("What was the amount of Georgiana's fortune?", "thirty thousand pounds"),
    ]),
    ("pp", "train", "The park was very large, and contained great variety of ground", 2, [
        ("How far did they ascend before reaching the top of the eminence?", "half-a-mile"),
        ("What kind of building was Pemberley House?", "a large, handsome stone building"),
        ("What was Pemberley House backed by?", "a ridge of high woody hills"),
        ("What did Elizabeth feel might be something?", "to be mistress of Pemberley"),
    ]),
    ("pp", "test", '"By this time, my dearest sister, you have received my hurried letter', 1, [
        ("Who dropped something expressing his belief that W. never intended to go to Gretna Green?", "Denny"),
        ("As far as which place did Colonel Forster trace the couple?", "Clapham"),
        ("From where had the dismissed chaise brought them?", "Epsom"),
        ("Which road were they seen to continue?", "the London road"),
        ("At the inns of which places did Colonel F. renew his inquiries?", "Barnet and Hatfield"),
        ("Who is really ill and keeps her room?", "My poor mother"),
        ("With whom is Jane's father going to London?", ("Colonel Forster", "My father is going to London with ")),
        ("Where must Colonel Forster be again to-morrow evening?", "at Brighton"),
    ]),
    ("pp", "train", '"You will laugh when you know where I am gone', 2, [
        ("Where does Lydia say she is going?", "Gretna Green"),
        ("What name will Lydia sign when she writes to them?", "Lydia Wickham"),
        ("To whom does Lydia ask that her excuses be made for not dancing?", "Pratt"),
        ("What does Lydia want Sally to mend?", "a great slit in my worked muslin gown"),
        ("To whom does Lydia send her love?", "Colonel Forster"),
    ]),
    ("pp", "test", '"You can be at no loss, Miss Bennet', 6, [
        ("How did Elizabeth look at the start of Lady Catherine's visit?", "with unaffected astonishment"),
        ("For what has Lady Catherine's character ever been celebrated?", "its sincerity and frankness"),
        ("When did the alarming report reach Lady Catherine?", "two days ago"),
        ("To whom was Elizabeth reported to be soon united?", "my nephew, my own nephew, Mr. Darcy", "Mr. Darcy"),
        ("What does Lady Catherine insist upon?", "having such a report universally contradicted"),
    ]),
    # ---------------------------------------------------------- Sense and Sensibility
    ("ss", "train", "The family of Dashwood had long been settled in Sussex", 3, [
        ("In which county had the family of Dashwood long been settled?", "Sussex"),
        ("What was the Dashwoods' residence?", "Norland Park"),
        ("Who was the old owner's constant companion and housekeeper?", "his sister"),
        ("How long before the old owner's own death did his sister die?", "ten years"),
        ("How many daughters did Mr. Henry Dashwood have by his present lady?", "three daughters"),
        ("How much did Mr. Henry Dashwood have in his own disposal?", "seven thousand pounds"),
        ("How old was the child for whose benefit the estate was tied up?", "four years old"),
        ("What did the old gentleman leave the three girls?", "a thousand pounds a-piece"),
    ]),
    ("ss", "train", "Mrs. John Dashwood did not at all approve", 1, [
        ("How much did John Dashwood intend to take from his son's fortune for his sisters?", "three thousand pounds"),
        ("What was the name of the John Dashwoods' little boy?", "Harry"),
        ("How were the Miss Dashwoods related to John Dashwood?", "only by half blood", "half blood"),
    ]),
    ("ss", "train", "As a house, Barton Cottage, though small", 3, [
        ("How was the roof of Barton Cottage covered?", "tiled"),
        ("How large was each sitting room?", "about sixteen feet square"),
        ("What formed the rest of the house?", "Four bed-rooms and two garrets"),
        ("When did the Dashwoods arrive at Barton Cottage?", "very early in September"),
        ("Where was the village of Barton chiefly situated?", "on one of these hills"),
        ("When does Mrs. Dashwood think they may think about building?", "in the spring"),
        ("What does Mrs. Dashwood wish were handsome?", ("the stairs", "I could wish ")),
    ]),
    ("ss", "train", '"Infirmity!" said Elinor', 8, [
        ("What does Marianne say Colonel Brandon complained of?", "the rheumatism"),
        ("To what advanced age has Mrs. Dashwood's life been extended?", "forty"),
        ("How old is Colonel Brandon?", ("thirty-five", "Colonel Brandon's being ")),
        ("What would a marriage of convenience seem to Marianne?", "a commercial exchange"),
        ("What kind of day was it when Colonel Brandon complained?", "a very cold damp day"),
        ("What did Colonel Brandon talk of, according to Marianne?", "flannel waistcoats"),
    ]),
    ("ss", "train", "The whole country about them abounded in beautiful walks", 6, [
        ("Who set off with Marianne towards the hills?", "Margaret"),
        ("What wind did the girls feel in their faces on the downs?", "a high south-westerly wind"),
        ("How long did Marianne propose to walk?", "at least two hours"),
        ("What brought Marianne suddenly to the ground?", "a false step"),
        ("What was the gentleman carrying?", "a gun"),
        ("Where did the gentleman seat Marianne?", "in a chair in the parlour"),
    ]),
    ("ss", "test", "She thanked him again and again", 14, [
        ("Why did the gentleman decline to be seated?", "he was dirty and wet"),
        ("What was the gentleman's name?", "Willoughby"),
        ("Where was Willoughby's present home?", "Allenham"),
        ("Which of all manly dresses did Marianne find the most becoming?", "a shooting-jacket"),
        ("When will Sir John ask Willoughby to dinner?", "on Thursday"),
        ("What does Sir John say Willoughby has got?", "the nicest little black bitch of a pointer"),
        ("In which county does Willoughby have a pretty little estate of his own?", "Somersetshire"),
        ("Who, according to Sir John, will be jealous?", "Brandon"),
    ]),
    ("ss", "train", '"He was four years with my uncle, who lives at Longstaple', 1, [
        ("Where does the speaker's uncle live?", "Longstaple, near Plymouth"),
        ("How long was he with the speaker's uncle?", "four years"),
        ("Without whose knowledge and approbation was the speaker unwilling to enter into the engagement?", "his mother"),
    ]),
    ("ss", "test", '"Bond Street, January.', 5, [
        ("Where was the letter written from?", "Bond Street"),
        ("In what month was the letter written?", "January"),
        ("In which county did the writer's former acquaintance with the family take place?", "Devonshire"),
        ("Where does the writer say his affections have long been engaged?", "elsewhere"),
        ("Besides the letters, what does the writer return?", "the lock of hair"),
        ("Who signed the letter?", "JOHN WILLOUGHBY"),
        ("What did every perusal of the letter increase in Elinor?", "her abhorrence of the man"),
    ]),
    ("ss", "train", '"It is. But have you likewise heard that Miss Grey', 3, [
        ("How much money does Miss Grey have?", "fifty thousand pounds"),
        ("Till when, according to Elinor, did her sister never doubt his regard?", "Till yesterday"),
        ("What does Elinor think there seems to be about him in some points?", "a hardness of heart"),
    ]),
    ("ss", "train", "Cleveland was a spacious, modern-built house", 2, [
        ("What kind of house was Cleveland?", "a spacious, modern-built house"),
        ("Under the guardianship of which trees was the house itself?", "the fir, the mountain-ash, and the acacia"),
        ("What tall trees were interspersed in the screen that shut out the offices?", "Lombardy poplars"),
        ("How far was Cleveland from Barton?", "eighty miles"),
        ("From what did Marianne's eye wander over the country?", "its Grecian temple"),
        ("What did Marianne fancy might be seen from the summits of the farthest hills?", ("Combe Magna", "fancy that from their summits ")),
    ]),
    ("ss", "test", '"Mrs. Robert Ferrars!"--was repeated', 5, [
        ("What did Edward take up from the window?", "a pair of scissors"),
        ("Whom has Edward's brother lately married?", "Miss Lucy Steele"),
        ("When were they married?", "last week"),
        ("Where are the married couple now?", "at Dawlish"),
        ("What did Elinor burst into after leaving the room?", "tears of joy"),
        ("Where did Edward walk out towards?", ("the village", "walked out towards ")),
    ]),
    ("ss", "train", "Marianne Dashwood was born to an extraordinary fate", 2, [
        ("At what age had Marianne formed her former affection?", "seventeen"),
        ("What constitutional safeguard did her husband still seek?", "a flannel waistcoat"),
        ("At what age did Marianne find herself submitting to new attachments?", "nineteen"),
        ("Of what did Marianne become the patroness?", "a village"),
    ]),
    # --------------------------------------------------------------------- Persuasion
    ("pe", "train", "Sir Walter Elliot, of Kellynch Hall, in Somersetshire", 8, [
        ("What was the only book Sir Walter ever took up for his own amusement?", "the Baronetage"),
        ("In which county is Kellynch Hall?", "Somersetshire"),
        ("When was Walter Elliot born?", "March 1, 1760"),
        ("When was Anne born?", "August 9, 1787"),
        ("Whom did Mary marry?", "Charles, son and heir of Charles Musgrove"),
        ("Where had the family first been settled?", "in Cheshire", "Cheshire"),
        ("Who is the heir presumptive?", "William Walter Elliot, Esq."),
        ("What was the beginning and the end of Sir Walter Elliot's character?", "Vanity"),
        ("How old is Sir Walter?", "fifty-four"),
        ("For how long had Lady Elliot promoted Sir Walter's real respectability?", "seventeen years"),
    ]),
    ("pe", "train", '"And who is Admiral Croft?"', 6, [
        ("What rank does Admiral Croft hold?", "a rear admiral of the white"),
        ("In which action had Admiral Croft been?", "the Trafalgar action"),
        ("Where has Admiral Croft been stationed since?", "the East Indies"),
        ("What does Sir Walter take for granted the admiral's face is as orange as?", "the cuffs and capes of my livery"),
        ("Where was Mrs Croft?", "at Taunton with the admiral", "at Taunton"),
        ("What, according to Mr Shepherd, is the very best preserver of furniture in the world?", "A lady, without a family"),
    ]),
    ("pe", "test", "He was not Mr Wentworth, the former curate of Monkford", 3, [
        ("How was Captain Frederick Wentworth related to the former curate of Monkford?", "his brother"),
        ("In consequence of what was Wentworth made commander?", "the action off St Domingo"),
        ("When did Wentworth come into Somersetshire?", "in the summer of 1806"),
        ("Where did Wentworth find a home for half a year?", ("Monkford", "half a year at ")),
        ("What did Sir Walter think of the alliance?", "a very degrading alliance"),
        ("Who received the engagement as a most unfortunate one?", "Lady Russell"),
        ("At what age would Anne Elliot have thrown herself away?", "nineteen"),
    ]),
    ("pe", "train", "Uppercross was a moderate-sized village", 2, [
        ("In what style had Uppercross been a few years back?", "the old English style"),
        ("What was trained round the casements of the parsonage?", "a vine and a pear-tree"),
        ("What features of Uppercross Cottage would catch the traveller's eye?", "its veranda, French windows, and other prettiness"),
        ("How far from the cottage was the Great House?", "about a quarter of a mile farther on"),
        ("Where was Mary lying when Anne arrived?", "on the faded sofa of the pretty little drawing-room"),
        ("Even in her bloom, what dignity had Mary reached?", "a fine girl"),
    ]),
    ("pe", "train", "The Musgroves, like their houses, were in a state of alteration", 2, [
        ("Besides Charles, which Musgrove children were grown up?", "Henrietta and Louisa"),
        ("How old were Henrietta and Louisa?", "nineteen and twenty"),
        ("Where had the Miss Musgroves been at school?", "Exeter"),
        ("Which family was generally the least to blame?", "the Great House family"),
        ("Why did both the Miss Musgroves join the walking party?", "at Mary's particular invitation"),
    ]),
    ("pe", "train", '"Captain Wentworth is not very gallant by you, Anne', 3, [
        ("Who asked Captain Wentworth what he thought of Anne?", "Henrietta"),
        ("What did Captain Wentworth say about Anne?", "You were so altered he should not have known you again"),
        ("How did Anne submit to the remark?", "in silent, deep mortification"),
        ("What had the years destroyed in Anne?", "her youth and bloom"),
    ]),
    ("pe", "train", "Captain Benwick had some time ago been first lieutenant", 1, [
        ("Of which ship had Captain Benwick been first lieutenant?", "the Laconia"),
        ("To whom had Captain Benwick been engaged?", "Captain Harville's sister", "Fanny Harville"),
        ("When had Fanny Harville died?", "the preceding summer"),
        ("Besides sedentary pursuits, what taste did Benwick have?", "a decided taste for reading"),
        ("For how long had Captain Harville taken his present house?", "half a year"),
    ]),
    ("pe", "test", "There was too much wind to make the high part of the new Cobb", 3, [
        ("From what had Wentworth had to jump Louisa in all their walks?", "the stiles"),
        ("Where did Louisa fall?", "on the pavement on the Lower Cobb"),
        ("By how much was Louisa too precipitate?", "half a second"),
        ("Who screamed \"She is dead! she is dead!\"?", "Mary"),
        ("Who caught and supported Henrietta?", "Captain Benwick and Anne"),
        ("Who first asked whether there was no one to help?", ("Captain Wentworth", "burst from ")),
    ]),
    ("pe", "train", "Anne found in Mrs Smith the good sense", 2, [
        ("What did Mrs Smith's accommodations consist of?", "a noisy parlour, and a dark bedroom behind"),
        ("How many servants were in the house to assist Mrs Smith?", "only one servant"),
        ("Where was Mrs Smith conveyed when she quitted the house?", "into the warm bath"),
        ("What quality of Mrs Smith's did Anne consider the choicest gift of Heaven?", "that elasticity of mind"),
    ]),
    ("pe", "train", "There had been a time, Mrs Smith told her", 1, [
        ("When did Mrs Smith catch cold?", "on the journey"),
        ("Who was Mrs Smith's nurse related to?", "a sister of her landlady"),
        ("What did the nurse teach Mrs Smith to do?", "to knit"),
        ("What little articles does Mrs Smith make?", "thread-cases, pin-cushions and card-racks"),
        ("What is the nurse's name?", "Nurse Rooke"),
    ]),
    ("pe", "test", '"I can listen no longer in silence.', 3, [
        ("How does the writer describe his state?", "half agony, half hope"),
        ("When did Anne almost break the writer's heart?", "eight years and a half ago"),
        ("To which place has Anne alone brought the writer?", "Bath"),
        ("How many days does the writer say he had waited?", "ten days"),
        ("How was the letter signed?", "F. W."),
        ("Who came in before Anne had recovered from the letter?", "Charles, Mary, and Henrietta"),
    ]),
]


def paragraphs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def locate(context, spec):
    text, anchor = (spec, None) if isinstance(spec, str) else spec
    base = 0
    if anchor is not None:
        a = context.find(anchor)
        if a < 0:
            raise ValueError(f"anchor {anchor!r} not in context")
        base = a + len(anchor)
    start = context.find(text, base)
    if start < 0:
        raise ValueError(f"answer {text!r} not in context")
    assert context[start:start + len(text)] == text
    return text, start


def build(verbose=False):
    paras = {k: paragraphs(os.path.join(AUSTEN, fn)) for k, (_, fn) in NOVELS.items()}
    counters = {k: 0 for k in NOVELS}
    out = {"train": [], "test": []}
    for novel, split, opening, n, qas in PASSAGES:
        ps = paras[novel]
        hits = [i for i, p in enumerate(ps) if opening in p]
        if len(hits) != 1:
            raise ValueError(f"{novel}: opening {opening!r} matched {len(hits)} paragraphs")
        i = hits[0]
        context = "\n".join(ps[i:i + n])
        if not 400 <= len(context) <= 4000:
            raise ValueError(f"{novel}: context at {opening!r} has {len(context)} chars")
        for q, *answers in qas:
            texts, starts = [], []
            for spec in answers:
                t, s = locate(context, spec)
                if verbose and context.count(t) > 1:
                    print(f"note: {t!r} occurs {context.count(t)}x; using offset {s} ({q})", file=sys.stderr)
                texts.append(t)
                starts.append(s)
            counters[novel] += 1
            out[split].append({
                "id": f"{novel}-{counters[novel]:03d}",
                "title": NOVELS[novel][0],
                "context": context,
                "question": q,
                "answers": {"text": texts, "answer_start": starts},
            })
    return out


def main():
    out = build(verbose="-v" in sys.argv)
    for split, rows in out.items():
        path = os.path.join(HERE, f"{split}.jsonl")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} questions, "
              f"{len({r['context'] for r in rows})} contexts -> {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
