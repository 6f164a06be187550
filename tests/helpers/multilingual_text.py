"""Embedded multilingual sentences (IGLUE / Multi30K languages and scripts) for the SentencePiece tests:
a model is trained on them in the test, nothing is downloaded."""

SENTENCES = (
  # en
  "A man is riding a horse on the beach.",
  "Two dogs play with a red ball in the park!",
  "The woman, wearing a hat, reads a book near the window.",
  # de
  "Ein Mann reitet ein Pferd am Strand.",
  "Zwei Hunde spielen mit einem roten Ball im Park.",
  "Die Frau mit dem Hut liest ein Buch am Fenster — schön, nicht wahr?",
  # fr
  "Un homme monte à cheval sur la plage.",
  "Deux chiens jouent avec une balle rouge dans le parc.",
  "La femme au chapeau lit un livre près de la fenêtre, n'est-ce pas ?",
  # es
  "Un hombre monta a caballo en la playa.",
  "Dos perros juegan con una pelota roja en el parque.",
  "¿La mujer del sombrero lee un libro junto a la ventana?",
  # cs
  "Muž jede na koni po pláži.",
  "Dva psi si hrají s červeným míčem v parku.",
  # tr
  "Bir adam sahilde ata biniyor.",
  "İki köpek parkta kırmızı bir topla oynuyor.",
  # id
  "Seorang pria menunggang kuda di pantai.",
  "Dua anjing bermain dengan bola merah di taman.",
  # sw
  "Mwanamume anaendesha farasi ufukweni.",
  "Mbwa wawili wanacheza na mpira mwekundu bustanini.",
  # ru
  "Мужчина едет верхом на лошади по пляжу.",
  "Две собаки играют с красным мячом в парке.",
  # bg
  "Мъж язди кон на плажа.",
  # ar
  "رجل يركب حصانا على الشاطئ.",
  "كلبان يلعبان بكرة حمراء في الحديقة.",
  # zh
  "一个男人在海滩上骑马。",
  "两只狗在公园里玩红色的球。",
  # ja
  "男性が浜辺で馬に乗っている。",
  # ko
  "한 남자가 해변에서 말을 타고 있다.",
  # ta
  "ஒரு மனிதன் கடற்கரையில் குதிரை சவாரி செய்கிறான்.",
  # bn
  "একজন মানুষ সমুদ্র সৈকতে ঘোড়ায় চড়ছে।",
  # vi
  "Một người đàn ông đang cưỡi ngựa trên bãi biển.",
  # et
  "Mees ratsutab rannas hobusega.",
  # pt
  "Um homem anda a cavalo na praia; dois cães brincam.",
)

# Unseen by the trainer: pieces not in the model (→ <unk>), doubled spaces, digits, mixed scripts.
PROBES = (
  "Ein  Mann,   riding 3 horses (x-ray) ☃ near 東京 and Zürich",
  "  leading and trailing spaces  ",
  "ÀÉÎÕÜ ﬁ ｆｕｌｌｗｉｄｔｈ ① ½",
  "Мужчина and a man 男人 رجل",
  "",
  "a",
)
