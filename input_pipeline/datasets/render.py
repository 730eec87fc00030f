"""A procedural 3D head renderer with exactly known pose (numpy + OpenCV only).

The head is a small set of convex parts in head-model coordinates (units of
half the head height; x right, y down, z away from the camera for a frontal
face, whose nose points to -z, as in `jaxpose.angles`):

* skull: an ellipsoid whose lower half narrows towards the jaw (quad mesh);
* face decals on the skull: eye sockets, eye whites, irises, brows, lips and
  the mouth line (polygons lying on the surface);
* nose: a five-vertex pyramid sticking out of the face, with dark nostrils
  on its underside (visible when the face looks up);
* ears: flattened ellipsoids touching the sides of the skull;
* hair: a shell around the skull covering only the top and the back.

Every part is left-right symmetric, so a mirrored image is exactly the head
with yaw and roll negated (`jaxpose.angles.flip_horizontal`).

The model is rotated by `jaxpose.angles.euler_to_matrix(pose)` (yaw > 0: nose
to the image's left; pitch > 0: looks up; roll > 0: top of the head to the
image's right, as in AFLW2000 / 300W-LP), placed in front of a pinhole camera and drawn with a painter's algorithm: back faces
are culled (each part is convex, so its visible faces never overlap), and
the parts are drawn in an order decided by which side of the plane
separating two touching parts the camera is on (the far ear, then a nose
that faces away, the skull and its decals, a nose that faces the camera, the
hair, the near ear). Faces are flat-shaded with Lambert's law under one
directional light. Drawing happens at `SUPERSAMPLE` times the output size and
is reduced with area averaging (anti-aliasing).
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from jaxpose import angles

SUPERSAMPLE = 2
SHIFT = 3  # sub-pixel bits passed to cv2.fillConvexPoly / fillPoly
CAMERA_DISTANCE = 8.0  # head units from the camera to the head centre

# The 21 landmarks, in AFLW's order; "left" is the image left of a frontal face (x < 0).
# LANDMARK_MIRROR[i] is the landmark that i becomes in a horizontally flipped image.
LANDMARK_NAMES = (
    "left_brow_left", "left_brow_center", "left_brow_right",
    "right_brow_left", "right_brow_center", "right_brow_right",
    "left_eye_left", "left_eye_center", "left_eye_right",
    "right_eye_left", "right_eye_center", "right_eye_right",
    "left_ear", "nose_left", "nose_tip", "nose_right", "right_ear",
    "mouth_left", "mouth_center", "mouth_right", "chin",
)  # fmt: skip
LANDMARK_MIRROR = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20)

_SKIN_LIGHT = np.array([170, 195, 235]) / 255  # BGR
_SKIN_DARK = np.array([45, 70, 110]) / 255
_HAIR = np.array(
    [[20, 20, 25], [25, 40, 60], [40, 70, 110], [90, 170, 215], [30, 70, 150], [150, 150, 155]]
) / 255  # black, dark brown, brown, blonde, red, grey (BGR)
_IRIS = np.array([[30, 50, 80], [20, 25, 30], [140, 100, 60], [70, 110, 70]]) / 255


@dataclasses.dataclass(frozen=True)
class Identity:
    """Shape and colours of one synthetic person (head units, BGR colours in [0, 1])."""

    half_width: float
    depth_front: float
    depth_back: float
    jaw_taper: float
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    iris_r: float
    brow_gap: float
    brow_w: float
    brow_thick: float
    brow_arch: float
    nose_y: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    mouth_h: float
    ear_y: float
    ear_h: float
    ear_len: float
    ear_thick: float
    hair_volume: float
    hair_front: float
    hair_back: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    hair_seed: int


@dataclasses.dataclass(frozen=True)
class View:
    """Everything about one image except the person: pose, light, framing, background, degradations."""

    pose: tuple[float, float, float]  # (yaw, pitch, roll) degrees
    light: tuple[float, float, float]  # unit vector towards the light, camera frame
    ambient: float
    diffuse: float
    head_px: float  # projected head height (2 units at the head centre's depth), output pixels
    center: tuple[float, float]  # head centre in output pixels
    background: str  # "flat" | "gradient" | "texture"
    colors: tuple[tuple[float, float, float], ...]  # background colours, BGR [0, 1]
    clutter: int  # number of blurred ellipses in the background
    blur_sigma: float  # output pixels; 0 = none
    noise_sigma: float  # grey levels
    seed: int  # background texture, clutter and pixel noise


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random person: proportions, skin tone, hair colour and volume, eye colour."""
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK
    skin = np.clip(skin * u(0.93, 1.07, 3), 0, 1)
    hair = np.clip(_HAIR[rng.integers(len(_HAIR))] * u(0.85, 1.15, 3), 0, 1)
    iris = _IRIS[rng.integers(len(_IRIS))]
    eye_h = u(0.045, 0.06)
    return Identity(
        half_width=u(0.70, 0.82), depth_front=u(0.80, 0.92), depth_back=u(0.85, 1.0),
        jaw_taper=u(0.15, 0.4), eye_dx=u(0.27, 0.33), eye_y=u(-0.14, -0.05),
        eye_w=u(0.10, 0.13), eye_h=eye_h, iris_r=eye_h * u(0.8, 1.0),
        brow_gap=u(0.10, 0.15), brow_w=u(0.13, 0.17), brow_thick=u(0.03, 0.045),
        brow_arch=u(0.01, 0.04), nose_y=u(0.20, 0.28), nose_len=u(0.22, 0.32),
        nose_w=u(0.09, 0.13), mouth_y=u(0.50, 0.58), mouth_w=u(0.15, 0.21),
        mouth_h=u(0.035, 0.055), ear_y=u(0.0, 0.1), ear_h=u(0.22, 0.3),
        ear_len=u(0.12, 0.16), ear_thick=u(0.05, 0.07), hair_volume=u(0.03, 0.12),
        hair_front=u(-0.75, -0.55), hair_back=u(0.2, 0.6),
        skin=tuple(skin), hair=tuple(hair), iris=tuple(iris),
        hair_seed=int(rng.integers(2**31)),
    )  # fmt: skip


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A random BGR colour in [0, 1], half-way towards a random grey (backgrounds stay moderate)."""
    return 0.5 * rng.uniform(0.0, 1.0, 3) + 0.5 * rng.uniform(0.1, 0.9)


def sample_view(
    rng: np.random.Generator,
    size: int,
    yaw_range: float = 90.0,
    pitch_range: float = 60.0,
    roll_range: float = 50.0,
) -> View:
    """A random view: pose uniform in the given +-ranges, light, framing, background, blur, noise."""
    u = rng.uniform
    pose = (u(-yaw_range, yaw_range), u(-pitch_range, pitch_range), u(-roll_range, roll_range))
    light = np.array([u(-1.0, 1.0), u(-1.0, 0.6), -u(0.6, 1.5)])
    kind = ("flat", "gradient", "texture")[rng.integers(3)]
    colors = tuple(tuple(_muted(rng)) for _ in range(3))
    return View(
        pose=pose, light=tuple(light / np.linalg.norm(light)), ambient=u(0.3, 0.5),
        diffuse=u(0.5, 0.8), head_px=size * u(0.42, 0.58),
        center=(size * (0.5 + u(-0.08, 0.08)), size * (0.5 + u(-0.08, 0.08))),
        background=kind, colors=colors, clutter=int(rng.integers(0, 4)),
        blur_sigma=0.0 if rng.random() < 0.4 else u(0.3, 1.1),
        noise_sigma=u(0.0, 6.0), seed=int(rng.integers(2**31)),
    )  # fmt: skip


# --- head geometry (model space) ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mesh:
    """Polygons of one convex part: vertices (V, 3), faces (F, k) vertex indices, albedo (F, 3)."""

    vertices: np.ndarray
    faces: np.ndarray
    albedo: np.ndarray
    center: np.ndarray  # (3,) a point inside the part: faces are oriented away from it


@dataclasses.dataclass(frozen=True)
class Decals:
    """Markings painted on the skull, in drawing order, stacked for vectorised drawing.

    outline (P, 3) holds all outlines one after the other, split at `splits`;
    centre, normal (outward skull normal at the centre) and albedo are (D, 3).
    """

    outline: np.ndarray
    splits: np.ndarray
    centre: np.ndarray
    normal: np.ndarray
    albedo: np.ndarray


PARTS = ("left_ear", "right_ear", "nose", "nostrils", "skull", "hair")


@dataclasses.dataclass(frozen=True)
class HeadModel:
    """The model-space geometry of one identity, built once and reused for all its views.

    All faces of all parts are stacked so that a view is transformed, culled and
    shaded in a few array operations: corners (F, 4, 3) (triangles repeat their
    last corner), inside (F, 3) a point inside each face's part (faces are
    oriented away from it), albedo (F, 3) BGR in [0, 1], part (F,) index into PARTS.
    """

    corners: np.ndarray
    inside: np.ndarray
    albedo: np.ndarray
    part: np.ndarray
    ear_centers: np.ndarray  # (2, 3) image-left (x < 0), image-right
    decals: Decals
    nose_root: np.ndarray  # (3,) skull point under the nose tip
    nose_normal: np.ndarray  # (3,) skull normal there: the plane separating nose and skull
    landmarks: np.ndarray  # (21, 3), LANDMARK_NAMES order


def _skull_point(ident: Identity, unit: np.ndarray) -> np.ndarray:
    """Points on the unit sphere (..., 3) -> the skull surface: an ellipsoid with a narrowing jaw."""
    x0, y0, z0 = unit[..., 0], unit[..., 1], unit[..., 2]
    taper = 1 - ident.jaw_taper * np.maximum(y0, 0) ** 2
    z = z0 * np.where(z0 < 0, ident.depth_front, ident.depth_back)
    return np.stack([ident.half_width * taper * x0, y0, z], -1)


def _face_point(ident: Identity, xy: np.ndarray) -> np.ndarray:
    """Front skull points (..., 3) above model (x, y) (..., 2) (y = height on the unit sphere)."""
    x, y = xy[..., 0], xy[..., 1]
    x0 = x / (ident.half_width * (1 - ident.jaw_taper * np.maximum(y, 0) ** 2))
    z0 = -np.sqrt(np.clip(1 - x0**2 - y**2, 0.0, None))
    return _skull_point(ident, np.stack([x0, y, z0], -1))


def _face_normal(ident: Identity, xy: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Outward unit normals (..., 3) of the front skull surface at model (x, y) (..., 2)."""
    dx = _face_point(ident, xy + [eps, 0]) - _face_point(ident, xy - [eps, 0])
    dy = _face_point(ident, xy + [0, eps]) - _face_point(ident, xy - [0, eps])
    normal = np.cross(dy, dx)  # y down, x right: dy x dx points to -z on the front
    return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


@functools.lru_cache(maxsize=8)
def _sphere_grid(n_u: int, n_v: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere vertices ((n_v+1)*n_u, 3) and quads (n_v*n_u, 4); u=0 faces -z, v=0 is the top."""
    u = np.arange(n_u) * 2 * np.pi / n_u
    v = np.linspace(0, np.pi, n_v + 1)
    uu, vv = np.meshgrid(u, v)
    verts = np.stack([np.sin(vv) * np.sin(uu), -np.cos(vv), -np.sin(vv) * np.cos(uu)], -1)
    i, j = np.meshgrid(np.arange(n_v), np.arange(n_u), indexing="ij")
    j1 = (j + 1) % n_u
    quads = np.stack([i * n_u + j, i * n_u + j1, (i + 1) * n_u + j1, (i + 1) * n_u + j], -1)
    return verts.reshape(-1, 3), quads.reshape(-1, 4)


def _uniform(albedo: np.ndarray, count: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(albedo, np.float64), (count, 3))


def _skull_mesh(ident: Identity) -> Mesh:
    unit, quads = _sphere_grid(28, 16)
    return Mesh(_skull_point(ident, unit), quads, _uniform(ident.skin, len(quads)), np.zeros(3))


def _hair_mesh(ident: Identity) -> Mesh:
    """A cap over the skull from the crown down to a hairline that falls from the forehead to the nape.

    Column u (0 at the face) of the cap spans polar angles [0, edge(u)], so the
    hairline is smooth; the cap stands `hair_volume` off the skull at the crown
    and thins towards the hairline.
    """
    n_u, n_v = 32, 8
    u = np.arange(n_u + 1) * 2 * np.pi / n_u
    front, back = np.arccos(-ident.hair_front), np.arccos(-ident.hair_back)
    edge = front + (back - front) * ((1 - np.cos(u)) / 2) ** 1.3
    f = np.linspace(0, 1, n_v + 1)[:, None]
    v = f * edge  # (n_v + 1, n_u + 1) polar angles; column n_u repeats column 0
    unit = np.stack([np.sin(v) * np.sin(u), -np.cos(v), -np.sin(v) * np.cos(u)], -1)
    lift = 1 + ident.hair_volume * (0.3 + 0.7 * (1 - f**2))
    vertices = (_skull_point(ident, unit) * lift[..., None]).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_v), np.arange(n_u), indexing="ij")
    w = n_u + 1
    quads = np.stack([i * w + j, i * w + j + 1, (i + 1) * w + j + 1, (i + 1) * w + j], -1).reshape(-1, 4)
    # Strand-like brightness texture, mirrored in x so that the head stays symmetric.
    mirrored = np.minimum(j, n_u - 1 - j).reshape(-1)
    texture = np.random.default_rng(ident.hair_seed).uniform(0.8, 1.2, (n_v, n_u))
    shade = texture[i.reshape(-1), mirrored]
    albedo = np.clip(np.asarray(ident.hair) * shade[:, None], 0, 1)
    return Mesh(vertices, quads, albedo, np.zeros(3))


def _ear_mesh(ident: Identity, side: int) -> Mesh:
    """A flattened ellipsoid just outside the skull at x = side * width, turned 20 degrees forwards."""
    unit, quads = _sphere_grid(10, 6)
    z = 0.12
    taper = 1 - ident.jaw_taper * max(ident.ear_y, 0) ** 2
    x_surface = ident.half_width * taper * np.sqrt(1 - ident.ear_y**2 - (z / ident.depth_back) ** 2)
    turn = np.radians(20) * side
    rotation = np.array([[np.cos(turn), 0, np.sin(turn)], [0, 1, 0], [-np.sin(turn), 0, np.cos(turn)]])
    local = unit * [ident.ear_thick, ident.ear_h, ident.ear_len]
    center = np.array([side * (x_surface + 0.6 * ident.ear_thick), ident.ear_y, z])
    return Mesh(local @ rotation.T + center, quads, _uniform(np.asarray(ident.skin) * 0.9, len(quads)), center)


def _nose_points(ident: Identity) -> np.ndarray:
    """Bridge, tip, left wing, right wing, base under the tip (5, 3)."""
    xy = np.array(
        [
            [0.0, ident.eye_y + 0.02],
            [0.0, ident.nose_y],
            [-ident.nose_w, ident.nose_y + 0.06],
            [ident.nose_w, ident.nose_y + 0.06],
            [0.0, ident.nose_y + 0.1],
        ]
    )
    points = _face_point(ident, xy)
    points[0] += 0.04 * _face_normal(ident, xy[0])
    points[1, 2] -= ident.nose_len
    return points


def _nose_meshes(ident: Identity) -> tuple[Mesh, Mesh]:
    """The nose pyramid (4 triangles) and its two nostrils (triangles on its underside, just outside)."""
    points = _nose_points(ident)
    inside = points[[0, 2, 3, 4]].mean(0) + [0, 0, 0.05]
    faces = np.array([[0, 2, 1], [0, 1, 3], [2, 4, 1], [1, 4, 3]])
    nose = Mesh(points, faces, _uniform(ident.skin, 4), inside)
    nostrils = []
    for face in faces[2:]:
        corners = points[face]
        centre = corners.mean(0)
        outward = centre - inside
        nostrils.append(centre + 0.45 * (corners - centre) + 0.004 * outward / np.linalg.norm(outward))
    dark = _uniform(np.asarray(ident.skin) * 0.25, 2)
    return nose, Mesh(np.concatenate(nostrils), np.arange(6).reshape(2, 3), dark, inside)


def _ellipse(center: tuple[float, float], radii: tuple[float, float], n: int = 14) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([center[0] + radii[0] * np.cos(t), center[1] + radii[1] * np.sin(t)], -1)


def _brow(ident: Identity, side: int) -> np.ndarray:
    """An arched band, thicker at the inner end (model x, y outline)."""
    t = np.linspace(-1, 1, 9)
    x = side * ident.eye_dx + t * ident.brow_w
    y = ident.eye_y - ident.brow_gap + ident.brow_arch * t**2
    half = ident.brow_thick * (0.65 - 0.35 * side * t) / 2 + 0.004
    return np.concatenate([np.stack([x, y - half], -1), np.stack([x, y + half], -1)[::-1]])


def _decals(ident: Identity) -> Decals:
    """Eye sockets, eye whites, irises, brows, lips and mouth line, in drawing order."""
    skin = np.asarray(ident.skin)
    specs = []  # (outline xy, albedo, centre xy)
    for s in (-1, 1):
        c = (s * ident.eye_dx, ident.eye_y)
        specs.append((_ellipse((c[0], c[1] - 0.01), (ident.eye_w * 1.4, ident.eye_h * 2.3)), skin * 0.75, c))
        specs.append((_ellipse(c, (ident.eye_w, ident.eye_h)), np.array([0.93, 0.94, 0.95]), c))
        specs.append((_ellipse(c, (ident.iris_r, ident.iris_r), 10), np.asarray(ident.iris), c))
        specs.append((_brow(ident, s), np.asarray(ident.hair) * 0.55, (c[0], c[1] - ident.brow_gap)))
    mouth = (0.0, ident.mouth_y)
    lip = skin * [0.45, 0.45, 0.85]
    specs.append((_ellipse(mouth, (ident.mouth_w, ident.mouth_h), 16), lip, mouth))
    specs.append((_ellipse(mouth, (ident.mouth_w * 0.95, ident.mouth_h * 0.22), 16), lip * 0.35, mouth))
    centres = np.array([c for _, _, c in specs])
    normals = _face_normal(ident, centres)
    # Each outline is lifted along its centre's normal so that it lies just outside the skull.
    outlines = [_face_point(ident, xy) + 0.003 * n for (xy, _, _), n in zip(specs, normals)]
    return Decals(
        outline=np.concatenate(outlines),
        splits=np.cumsum([len(o) for o in outlines])[:-1],
        centre=_face_point(ident, centres),
        normal=normals,
        albedo=np.array([a for _, a, _ in specs]),
    )


def _landmarks(ident: Identity, ears: tuple[Mesh, Mesh], nose: Mesh) -> np.ndarray:
    """The 21 model-space landmarks (21, 3) in the order of LANDMARK_NAMES."""
    xy = []
    for s in (-1, 1):
        bx, by = s * ident.eye_dx, ident.eye_y - ident.brow_gap
        xy += [[bx - ident.brow_w, by + ident.brow_arch], [bx, by], [bx + ident.brow_w, by + ident.brow_arch]]
    for s in (-1, 1):
        ex = s * ident.eye_dx
        xy += [[ex - ident.eye_w, ident.eye_y], [ex, ident.eye_y], [ex + ident.eye_w, ident.eye_y]]
    xy += [[-ident.mouth_w, ident.mouth_y], [0, ident.mouth_y], [ident.mouth_w, ident.mouth_y]]
    face = _face_point(ident, np.array(xy))
    chin = _skull_point(ident, np.array([0.0, 0.92, -np.sqrt(1 - 0.92**2)]))
    _, tip, left, right, _ = nose.vertices
    middle = np.stack([ears[0].center, left, tip, right, ears[1].center])
    return np.concatenate([face[:12], middle, face[12:], chin[None]])


def _stack_parts(meshes: dict[str, Mesh]) -> dict[str, np.ndarray]:
    """Faces of named parts -> the stacked HeadModel arrays (corners, inside, albedo, part)."""
    corners, inside, albedo, part = [], [], [], []
    for name, mesh in meshes.items():
        faces = mesh.faces if mesh.faces.shape[1] == 4 else mesh.faces[:, [0, 1, 2, 2]]
        corners.append(mesh.vertices[faces])
        inside.append(np.broadcast_to(mesh.center, (len(faces), 3)))
        albedo.append(mesh.albedo)
        part.append(np.full(len(faces), PARTS.index(name)))
    return {
        "corners": np.concatenate(corners),
        "inside": np.concatenate(inside),
        "albedo": np.concatenate(albedo),
        "part": np.concatenate(part),
    }


@functools.lru_cache(maxsize=16)
def head_model(ident: Identity) -> HeadModel:
    """All parts of one identity's head in model space (cached: an identity is drawn in several views)."""
    ears = (_ear_mesh(ident, -1), _ear_mesh(ident, 1))
    nose, nostrils = _nose_meshes(ident)
    root = np.array([0.0, ident.nose_y])
    meshes = {"left_ear": ears[0], "right_ear": ears[1], "nose": nose, "nostrils": nostrils,
              "skull": _skull_mesh(ident), "hair": _hair_mesh(ident)}  # fmt: skip
    return HeadModel(
        **_stack_parts(meshes),
        ear_centers=np.stack([ear.center for ear in ears]),
        decals=_decals(ident),
        nose_root=_face_point(ident, root),
        nose_normal=_face_normal(ident, root),
        landmarks=_landmarks(ident, ears, nose),
    )


def landmarks_3d(ident: Identity) -> np.ndarray:
    """The 21 model-space landmark points (21, 3) in the order of LANDMARK_NAMES."""
    return head_model(ident).landmarks.copy()


# --- camera and drawing -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Camera:
    """Pinhole camera at the origin looking down +z; the head centre sits at (0, 0, CAMERA_DISTANCE)."""

    rotation: np.ndarray  # (3, 3) head model -> camera, jaxpose.angles.euler_to_matrix(pose)
    focal: float  # output pixels
    center: tuple[float, float]  # principal point = projected head centre, output pixels
    light: np.ndarray  # (3,) unit vector towards the light
    ambient: float
    diffuse: float

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return points @ self.rotation.T + [0.0, 0.0, CAMERA_DISTANCE]

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) -> output pixel coordinates (..., 2), pixel centres at integers."""
        uv = self.focal * points_cam[..., :2] / points_cam[..., 2:3]
        return uv + np.asarray(self.center)

    def shade(self, albedo: np.ndarray, normals_cam: np.ndarray) -> np.ndarray:
        """Lambert: albedo * (ambient + diffuse * max(0, n . l)), as 0-255 BGR."""
        lambert = np.maximum(normals_cam @ self.light, 0.0)
        return np.minimum(albedo * (self.ambient + self.diffuse * lambert)[..., None] * 255, 255.0)

    def faces(self, point: np.ndarray, normal: np.ndarray) -> bool:
        """True when the camera is on the side of the plane (model point, model normal) the normal points to."""
        return float((self.rotation @ normal) @ self.to_camera(point)) < 0


def make_camera(view: View) -> Camera:
    """The camera of a view: head height `head_px` at the head centre, head centre at `center`."""
    return Camera(
        rotation=angles.euler_to_matrix(np.asarray(view.pose)),
        focal=view.head_px * CAMERA_DISTANCE / 2,
        center=view.center,
        light=np.asarray(view.light),
        ambient=view.ambient,
        diffuse=view.diffuse,
    )


def _fixed(uv: np.ndarray) -> np.ndarray:
    """Output pixel coordinates -> fixed-point coordinates of the supersampled canvas."""
    canvas = uv * SUPERSAMPLE + (SUPERSAMPLE - 1) / 2
    return np.round(canvas * (1 << SHIFT)).astype(np.int32)


def _layers(model: HeadModel, cam: Camera) -> np.ndarray:
    """Drawing layer of each part (PARTS order) in this view; decals follow layer SKULL_LAYER.

    Parts touch the skull but lie outside it, so a part is behind the skull
    exactly when the camera is behind the plane separating them: the far ear
    and a nose that faces away are drawn first, the hair (a cap enclosing the
    skull) and the near ear last.
    """
    ears = [cam.faces(c, np.array([np.sign(c[0]), 0.0, 0.0])) for c in model.ear_centers]
    nose_front = cam.faces(model.nose_root, model.nose_normal)
    nose = 4 if nose_front else 1
    return np.array([7 if ears[0] else 0, 7 if ears[1] else 0, nose, nose + 1, SKULL_LAYER, 6])


SKULL_LAYER = 3


def _fill(canvas: np.ndarray, points: np.ndarray, colors: list) -> None:
    for pts, color in zip(points, colors):
        cv2.fillConvexPoly(canvas, pts, color, cv2.LINE_8, SHIFT)


def _draw_head(canvas: np.ndarray, model: HeadModel, cam: Camera) -> None:
    """Back-face culling, Lambert shading, then the painter's algorithm: by layer, far to near within one."""
    corners = cam.to_camera(model.corners)  # (F, 4, 3)
    normals = np.cross(corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1])
    centroids = corners.mean(1)
    outward = np.sum(normals * (centroids - cam.to_camera(model.inside)), -1)
    normals *= np.sign(outward)[:, None]
    norm = np.linalg.norm(normals, axis=-1)
    visible = np.flatnonzero((np.sum(normals * centroids, -1) < 0) & (norm > 1e-12))
    layer = _layers(model, cam)[model.part[visible]]
    order = visible[np.lexsort((-centroids[visible, 2], layer))]
    colors = cam.shade(model.albedo[order], normals[order] / norm[order, None]).tolist()
    points = _fixed(cam.project(corners[order]))
    split = int(np.searchsorted(np.sort(layer), SKULL_LAYER, side="right"))
    _fill(canvas, points[:split], colors[:split])
    _draw_decals(canvas, model.decals, cam)
    _fill(canvas, points[split:], colors[split:])


def _draw_decals(canvas: np.ndarray, decals: Decals, cam: Camera) -> None:
    """Skull markings, each shown when the skull faces the camera at its centre."""
    normals = decals.normal @ cam.rotation.T
    visible = np.sum(normals * cam.to_camera(decals.centre), -1) < 0
    colors = cam.shade(decals.albedo, normals).tolist()
    outlines = np.split(_fixed(cam.project(cam.to_camera(decals.outline))), decals.splits)
    for points, color, show in zip(outlines, colors, visible.tolist()):
        if show:
            cv2.fillPoly(canvas, [points], color, cv2.LINE_8, SHIFT)


def _background(view: View, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Flat colour, linear gradient or smooth colour-noise texture, plus 0-3 ellipses (uint8 BGR)."""
    c = (np.asarray(view.colors) * 255).astype(np.float32)
    if view.background == "flat":
        image = np.empty((height, width, 3), np.float32)
        image[:] = c[0]
    elif view.background == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        x = np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(theta))
        y = np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(theta))
        t = x + y
        t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
        image = c[0] * (1 - t) + c[1] * t
    else:
        cells = int(rng.integers(3, 9))
        weights = rng.dirichlet(np.ones(3), (cells, cells)).astype(np.float32)
        blend = cv2.resize(weights, (width, height), interpolation=cv2.INTER_CUBIC)
        image = blend @ c
    for _ in range(view.clutter):
        color = (_muted(rng) * 255).tolist()
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (int(rng.integers(width // 16, width // 4)), int(rng.integers(height // 16, height // 4)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    return np.asarray(image + 0.5, np.uint8)


def render(ident: Identity, view: View, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one head: (BGR uint8 image (size, size, 3), landmarks (21, 2) float32 pixels).

    Landmarks are the projections of `landmarks_3d` (also where a point is
    hidden, e.g. the far ear), in output pixels with pixel centres at integers.
    """
    rng = np.random.default_rng(view.seed)
    background = cv2.GaussianBlur(_background(view, size, size, rng), (0, 0), 1.5)  # out of focus
    big = size * SUPERSAMPLE
    canvas = cv2.resize(background, (big, big), interpolation=cv2.INTER_LINEAR)
    cam = make_camera(view)
    model = head_model(ident)
    _draw_head(canvas, model, cam)
    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    if view.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), view.blur_sigma)
    image = image + (np.float32(view.noise_sigma) * rng.standard_normal(image.shape, np.float32) + np.float32(0.5))
    landmarks = cam.project(cam.to_camera(model.landmarks))
    return np.clip(image, 0, 255, out=image).astype(np.uint8), landmarks.astype(np.float32)
